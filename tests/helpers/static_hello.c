/* A statically linked program: `portfence run` must refuse it (126). */
int main(void)
{
	return 0;
}
