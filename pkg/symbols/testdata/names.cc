// Fixture for pkg/symbols' demangling: C++ names of every common shape,
// and functions given Rust's mangled names (legacy and v0, as rustc 1.95
// emitted them, "runner" renamed by hand) through asm labels, so no Rust
// compiler is needed.
#include <cstdio>
#include <vector>

namespace ns {

struct Config {
	int verbose;
	long limit;
};
Config config = {1, 100};

class Counter {
public:
	static long total; // a static data member
	static int value(int x);
	int bump(int by);
	int n = 0;
};
long Counter::total = 3;

int Counter::value(int x) {
	total += x;
	return static_cast<int>(total) * 2;
}

int Counter::bump(int by) {
	n += by;
	return n + value(by);
}

// Overloads: "ns::scale" alone is ambiguous.
int scale(int x) { return x * 2; }
double scale(double x) { return x * 2.5; }

struct Vec {
	int x, y;
	Vec operator+(const Vec &o) const { return Vec{x + o.x, y + o.y}; }
};

template <typename T> __attribute__((noinline)) T twice(T v) { return v + v; }

namespace {
int hidden_state = 4;
}

} // namespace ns

extern "C" int legacy_worker(int) __asm__("_ZN4demo4demo6worker17hda9a04265f523581E");
extern "C" int legacy_worker(int x) { return x + 1; }
extern "C" int v0_runner(int) __asm__("_RNvNtCs2ndz2m94zur_4demo4demo6runner");
extern "C" int v0_runner(int x) { return x + 2; }
extern "C" long v0_bump(long) __asm__("_RNvMNtCs2ndz2m94zur_4demo4demoNtB2_7Counter4bump");
extern "C" long v0_bump(long x) { return x + 3; }

int main(int argc, char **) {
	ns::Counter c;
	std::vector<int> v;
	for (int i = 0; i < argc + 2; i++)
		v.push_back(c.bump(i));
	ns::Vec a{1, 2}, b{3, 4};
	ns::Vec s = a + b;
	int r = ns::twice(argc) + static_cast<int>(ns::twice(1.5)) + ns::scale(argc) +
		static_cast<int>(ns::scale(0.5)) + s.x + ns::hidden_state + static_cast<int>(ns::config.limit) +
		legacy_worker(argc) + v0_runner(argc) + static_cast<int>(v0_bump(argc)) + v.back();
	std::printf("%d\n", r);
	return 0;
}
