/* With -DFUZZ_REPLAY, a main() that runs the target once per file named
 * on the command line: the saved crash inputs and the seed corpus become
 * a regression test that needs no fuzzer. */
#ifdef FUZZ_REPLAY
#include <stdio.h>

int main(int argc, char **argv)
{
	int replayed = 0;
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		static uint8_t buf[16 << 20];
		if (!f) {
			perror(argv[i]);
			return 1;
		}
		size_t n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		if (LLVMFuzzerTestOneInput(buf, n) != 0) {
			fprintf(stderr, "%s: target rejected the input\n", argv[i]);
			return 1;
		}
		replayed++;
	}
	printf("replayed %d inputs\n", replayed);
	return 0;
}
#endif
