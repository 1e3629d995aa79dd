/* A library the test program loads with dlopen. */
long plugin_counter;

void plugin_bump(int n)
{
	for (int i = 0; i < n; i++)
		plugin_counter++;
}
