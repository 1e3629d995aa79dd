/* Fixture for pkg/symbols: a shared library that also defines "counter". */
int counter = 5;
int lib_counter;

int lib_func(int x) {
	lib_counter += x;
	return lib_counter * 3 + x + counter;
}
