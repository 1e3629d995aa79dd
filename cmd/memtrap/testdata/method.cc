// A C++ method writes the watched member.
#include <cstdio>

namespace ns {
class Account {
public:
	long balance = 0;
	void deposit(int amount);
};
void Account::deposit(int amount) { balance += amount; }
} // namespace ns

ns::Account account;

int main()
{
	for (int i = 1; i <= 3; i++)
		account.deposit(i * 10);
	std::printf("%ld\n", account.balance);
	return 0;
}
