// Functions whose arguments and locals --arg and --local watch: a record
// filled through a pointer, and a recursive function with a local array.
#include <stdio.h>
#include <string.h>
struct rec { long id; char name[16]; };
__attribute__((noinline)) void fill_record(struct rec *r, long id) { r->id = id; strcpy(r->name, "x"); }
__attribute__((noinline)) long process_batch(int depth) {
	long scratch[4];
	scratch[0] = depth;
	scratch[1] = depth * 2;
	long r = depth > 0 ? process_batch(depth - 1) : 0;
	scratch[2] = r;
	return scratch[0] + scratch[1] + scratch[2];
}
/* Its argument is no pointer: --arg scale:1:8 cannot watch what it "points" to. */
__attribute__((noinline)) long scale(long x) { return x * 3; }
int main(void) {
	struct rec a, b;
	long s = 0;
	for (long i = 1; i <= 6; i++)
		s += scale(i << 12);
	fill_record(&a, 1);
	fill_record(&b, 2);
	a.id = 5; /* after the call: not watched */
	printf("%ld %ld %ld %ld\n", a.id, b.id, process_batch(1), s);
	return 0;
}
