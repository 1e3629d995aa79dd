// C++ heap blocks for --heap tests: a new'd object and a vector that
// reallocates.
#include <cstdio>
#include <vector>

struct Session {
	long token = 0;
	static Session *create();
};

__attribute__((noinline)) Session *Session::create() { return new Session(); }

__attribute__((noinline)) void fill_vector(std::vector<long> &v) {
	for (long i = 0; i < 5; i++)
		v.push_back(i + 100);
}

int main() {
	Session *s = Session::create();
	s->token = 0x5ec0de;
	std::vector<long> v;
	fill_vector(v);
	std::printf("%lx %zu\n", s->token, v.size());
	delete s;
	return 0;
}
