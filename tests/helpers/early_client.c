/* The program for the early-call test: its only job is to link
 * early-connect.so, whose constructor does the work. */
#include <stdio.h>

void early_connect_linked(void);

int main(void)
{
	early_connect_linked();
	puts("main ran");
	return 0;
}
