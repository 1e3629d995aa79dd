/* For reports that name a write by its DWARF member: nested structs,
 * arrays of structs, a 2-D array, a write into an int's second byte. */
#include <stdio.h>
#include <string.h>
struct limits { int min, max; };
struct config { long id; struct limits limits; char name[8]; short grid[2][3]; };
struct config cfg;
struct ent { int k; char name[4]; };
struct ent table[3];
long session_token[4];
int main(void)
{
	cfg.limits.max = 7;
	table[2].name[1] = 'x';
	session_token[3] = 9;
	cfg.grid[1][2] = 5;
	memset(cfg.name, 'a', 8);
	((volatile char *)&cfg.id)[1] = 3;
	printf("ok\n");
	return 0;
}
