/* Loads argv[1] with dlopen and calls its plugin_bump(5). */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv)
{
	void *h = dlopen(argv[1], RTLD_NOW);
	if (!h) {
		fprintf(stderr, "%s\n", dlerror());
		return 1;
	}
	void (*bump)(int) = (void (*)(int))dlsym(h, "plugin_bump");
	long *counter = dlsym(h, "plugin_counter");
	bump(5);
	printf("counter %ld\n", *counter);
	return 0;
}
