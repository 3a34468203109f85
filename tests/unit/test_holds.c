/* The app's memory of held 4-tuples: claims are exclusive, releases
 * enter the quarantine, and the kernel's word is asked where memory
 * cannot answer; and the kernel's exact lookup itself, on real sockets. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/decide.h"
#include "core/holds.h"
#include "kernel/sockdiag.h"

#define PORTS 16
#define QUARANTINE 10

static struct pf_state state;

static void setup(void)
{
	size_t size = PORTS * PF_HOLD_SLOTS * sizeof(uint64_t);
	void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(map, MAP_FAILED);
	state = (struct pf_state){.holds = map, .num_ports = PORTS};
}

static void teardown(void)
{
	munmap((void *)state.holds, PORTS * PF_HOLD_SLOTS * sizeof(uint64_t));
}

TestSuite(holds, .init = setup, .fini = teardown);

Test(holds, a_claim_is_exclusive_until_released)
{
	struct pf_hold_ref a, b;
	uint32_t now = 5000;

	cr_assert_eq(pf_hold_claim(&state, 3, 42, now, QUARANTINE, &a), PF_HOLD_UNKNOWN);
	cr_assert_neq(a.slot, 0, "an unknown 4-tuple comes back claimed");
	cr_expect_eq(pf_hold_claim(&state, 3, 42, now, QUARANTINE, &b), PF_HOLD_CLAIMED,
		     "a second socket sees the claim");
	pf_hold_connected(&state, &a);
	cr_expect_eq(pf_hold_claim(&state, 3, 42, now, QUARANTINE, &b), PF_HOLD_HELD);
	cr_expect_eq(pf_hold_claim(&state, 3, 43, now, QUARANTINE, &b), PF_HOLD_UNKNOWN,
		     "another destination on the same port is free to try");
	pf_hold_release(&state, &a, now);
	cr_expect_eq(pf_hold_claim(&state, 3, 42, now + QUARANTINE - 1, QUARANTINE, &b), PF_HOLD_RECENT);
	cr_expect_eq(pf_hold_claim(&state, 3, 42, now + QUARANTINE, QUARANTINE, &b), PF_HOLD_FREE,
		     "after the quarantine memory clears it without the kernel");
	cr_expect_eq(pf_hold_claim(&state, 3, 42, now + QUARANTINE, QUARANTINE, &a), PF_HOLD_CLAIMED);
}

Test(holds, an_unclaimed_or_forgotten_tuple_is_clean_or_unknown)
{
	struct pf_hold_ref a, b;

	pf_hold_claim(&state, 1, 7, 100, QUARANTINE, &a);
	pf_hold_unclaim(&state, &a);
	cr_expect_eq(pf_hold_claim(&state, 1, 7, 101, QUARANTINE, &b), PF_HOLD_FREE,
		     "a claim that came to nothing leaves the 4-tuple clean");
	pf_hold_connected(&state, &b);
	pf_hold_forget(&state, &b);
	cr_expect_eq(pf_hold_claim(&state, 1, 7, 102, QUARANTINE, &a), PF_HOLD_UNKNOWN,
		     "a socket shared across a fork leaves the kernel to answer");
}

/* The shim leaves a connected socket's claim unsettled (settling it cost
 * a cache miss after every connect): close must release it all the same,
 * a fork's close forget it, and past CLAIM_ABANDONED_MS (1 s) others take
 * it for held. */
Test(holds, an_unsettled_claim_is_released_and_forgotten)
{
	struct pf_hold_ref a, b;
	uint32_t now = 5120;	/* a 128 ms tick begins */

	cr_assert_eq(pf_hold_claim(&state, 2, 9, now, QUARANTINE, &a), PF_HOLD_UNKNOWN);
	cr_expect_eq(pf_hold_claim(&state, 2, 9, now + 1023, QUARANTINE, &b), PF_HOLD_CLAIMED);
	cr_expect_eq(pf_hold_claim(&state, 2, 9, now + 1024, QUARANTINE, &b), PF_HOLD_HELD,
		     "an old claim counts as held");
	pf_hold_release(&state, &a, now + 1500);
	cr_expect_eq(pf_hold_claim(&state, 2, 9, now + 1500 + QUARANTINE - 1, QUARANTINE, &b),
		     PF_HOLD_RECENT, "released from the claim: quarantined");
	cr_expect_eq(pf_hold_claim(&state, 2, 9, now + 1500 + QUARANTINE, QUARANTINE, &a), PF_HOLD_FREE);
	pf_hold_forget(&state, &a);
	cr_expect_eq(pf_hold_claim(&state, 2, 9, now + 1500 + QUARANTINE, QUARANTINE, &b), PF_HOLD_UNKNOWN,
		     "a claim forgotten after a fork leaves the kernel to answer");
}

Test(holds, only_one_reclaim_wins)
{
	struct pf_hold_ref owner, first, second;

	pf_hold_claim(&state, 2, 9, 100, QUARANTINE, &owner);
	pf_hold_disown(&state, &owner);
	cr_assert_eq(pf_hold_claim(&state, 2, 9, 100, QUARANTINE, &first), PF_HOLD_HELD);
	cr_assert_eq(pf_hold_claim(&state, 2, 9, 100, QUARANTINE, &second), PF_HOLD_HELD);
	cr_expect(pf_hold_reclaim(&state, &first));
	cr_expect_not(pf_hold_reclaim(&state, &second), "the second saw a word that changed");
	cr_expect_eq(second.slot, 0);
}

/* A claim's time is kept in 128 ms ticks: the second (eight ticks) is
 * counted from the tick it was made in. */
Test(holds, a_claim_older_than_a_second_was_abandoned)
{
	struct pf_hold_ref a, b;

	pf_hold_claim(&state, 4, 11, 128, QUARANTINE, &a);
	cr_expect_eq(pf_hold_claim(&state, 4, 11, 128 + 1023, QUARANTINE, &b), PF_HOLD_CLAIMED);
	cr_expect_eq(pf_hold_claim(&state, 4, 11, 128 + 1024, QUARANTINE, &b), PF_HOLD_HELD,
		     "an abandoned claim is left to the kernel's verification");
}

static uint32_t owner_4242(void)
{
	return 4242;
}

Test(holds, a_claim_names_the_process_that_made_it)
{
	struct pf_hold_ref a, b, c;

	pf_hold_owner = owner_4242;
	pf_hold_claim(&state, 4, 12, 100, QUARANTINE, &a);
	pf_hold_owner = NULL;
	cr_assert_eq(pf_hold_claim(&state, 4, 12, 200, QUARANTINE, &b), PF_HOLD_CLAIMED);
	cr_expect_eq(pf_hold_claimant(&b), 4242);
	cr_expect(pf_hold_reclaim(&state, &b), "a claim judged gone is taken over");
	cr_expect_eq(pf_hold_claimant(&b), 0, "with no owner function, a claim names no process");
	pf_hold_disown(&state, &b);
	cr_expect_eq(pf_hold_claim(&state, 4, 12, 300, QUARANTINE, &c), PF_HOLD_HELD);
	cr_expect_eq(pf_hold_claimant(&c), 0, "a held word names no claimant");
}

Test(holds, a_full_port_still_answers)
{
	struct pf_hold_ref ref;

	for (uint32_t key = 1; key <= PF_HOLD_SLOTS; key++) {
		cr_assert_eq(pf_hold_claim(&state, 5, key, 100, QUARANTINE, &ref), PF_HOLD_UNKNOWN);
		pf_hold_connected(&state, &ref);
	}
	cr_expect_not(pf_hold_port_idle(&state, 5, 100));
	cr_expect_eq(pf_hold_claim(&state, 5, 99, 100, QUARANTINE, &ref), PF_HOLD_UNKNOWN);
	cr_expect_eq(ref.slot, 0, "no slot left: the kernel alone answers, unclaimed");
	cr_expect(pf_hold_port_idle(&state, 6, 100));
	cr_expect_eq(pf_hold_claim(&state, PORTS, 1, 100, QUARANTINE, &ref), PF_HOLD_UNKNOWN,
		     "a port outside the table is never read");
}

/* Processes claiming the same keys at the same moment: each key is
 * claimed once.  One that had not found the key, then looked for a free
 * slot after another had put the key in the first one, took the next
 * free slot: two claims of one 4-tuple.  The children start together
 * and the race is run many times, so that the window is met. */
Test(holds, processes_racing_for_one_tuple_get_it_once)
{
	enum { CHILDREN = 6, KEYS = 200, ROUNDS = 40 };
	struct race {
		_Atomic int ready, go;
		_Atomic int wins[KEYS];
	} *race = mmap(NULL, sizeof(*race), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(race, MAP_FAILED);
	for (int round = 0; round < ROUNDS; round++) {
		memset((void *)state.holds, 0, PORTS * PF_HOLD_SLOTS * sizeof(uint64_t));
		memset(race, 0, sizeof(*race));
		for (int c = 0; c < CHILDREN; c++) {
			if (fork() == 0) {
				atomic_fetch_add(&race->ready, 1);
				while (!atomic_load(&race->go))
					sched_yield();
				for (uint32_t key = 1; key <= KEYS; key++) {
					struct pf_hold_ref ref;
					enum pf_hold_verdict v =
						pf_hold_claim(&state, key % PORTS, key, 100, QUARANTINE, &ref);
					if ((v == PF_HOLD_UNKNOWN || v == PF_HOLD_FREE) && ref.slot)
						atomic_fetch_add(&race->wins[key - 1], 1);
				}
				_exit(0);
			}
		}
		while (atomic_load(&race->ready) < CHILDREN)
			sched_yield();
		atomic_store(&race->go, 1);
		for (int c = 0; c < CHILDREN; c++)
			wait(NULL);
		for (int key = 0; key < KEYS; key++)
			cr_assert_leq(race->wins[key], 1, "round %d: key %d claimed %d times", round, key + 1,
				      race->wins[key]);
	}
	munmap(race, sizeof(*race));
}

/* ---- the kernel's exact lookup, on real loopback sockets ---- */

static struct sockaddr_in loopback(uint16_t port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sin;
}

static int listener(struct sockaddr_in *where)
{
	socklen_t len = sizeof(*where);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	*where = loopback(0);
	cr_assert_eq(bind(fd, (struct sockaddr *)where, sizeof(*where)), 0);
	cr_assert_eq(listen(fd, 8), 0);
	getsockname(fd, (struct sockaddr *)where, &len);
	return fd;
}

static enum pf_tuple_use use_of(int client, const struct sockaddr_in *server)
{
	struct sockaddr_in local;
	socklen_t len = sizeof(local);
	cr_assert_eq(getsockname(client, (struct sockaddr *)&local, &len), 0);
	return pf_tcp_tuple_use((struct sockaddr *)&local, (const struct sockaddr *)server, -1);
}

Test(sockdiag, the_kernel_shows_each_stage_of_a_connection)
{
	struct sockaddr_in server, local;
	socklen_t len = sizeof(local);
	int lfd = listener(&server), client = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_eq(connect(client, (struct sockaddr *)&server, sizeof(server)), 0);
	int accepted = accept(lfd, NULL, NULL);
	getsockname(client, (struct sockaddr *)&local, &len);
	cr_expect_eq(use_of(client, &server), PF_TUPLE_BUSY, "established");
	close(client);
	usleep(20000);
	cr_expect_eq(pf_tcp_tuple_use((struct sockaddr *)&local, (struct sockaddr *)&server, -1),
		     PF_TUPLE_LINGERING, "closed by us, not by the peer");
	struct timespec closed, asked;
	clock_gettime(CLOCK_MONOTONIC, &closed);
	close(accepted);
	usleep(1000);
	enum pf_tuple_use fresh = pf_tcp_tuple_use((struct sockaddr *)&local, (struct sockaddr *)&server, -1);
	clock_gettime(CLOCK_MONOTONIC, &asked);
	/* Asked within 3 ms (a busy machine may take longer: then the
	 * answer proves nothing either way). */
	if ((asked.tv_sec - closed.tv_sec) * 1000000000L + (asked.tv_nsec - closed.tv_nsec) < 3000000L)
		cr_expect_eq(fresh, PF_TUPLE_SETTLING, "TIME_WAIT entered a moment ago");
	usleep(20000);
	cr_expect_eq(pf_tcp_tuple_use((struct sockaddr *)&local, (struct sockaddr *)&server, -1),
		     PF_TUPLE_TIME_WAIT, "closed on both sides, settled");
	struct sockaddr_in unused = loopback(1);
	cr_expect_eq(pf_tcp_tuple_use((struct sockaddr *)&unused, (struct sockaddr *)&server, -1),
		     PF_TUPLE_FREE, "nothing there");
	close(lfd);
}

Test(sockdiag, a_kept_netlink_socket_answers_the_same)
{
	struct sockaddr_in server;
	int lfd = listener(&server), client = socket(AF_INET, SOCK_STREAM, 0);
	int netlink = socket(AF_NETLINK, SOCK_DGRAM, 4 /* NETLINK_SOCK_DIAG */);

	cr_assert_geq(netlink, 0);
	cr_assert_eq(connect(client, (struct sockaddr *)&server, sizeof(server)), 0);
	struct sockaddr_in local;
	socklen_t len = sizeof(local);
	getsockname(client, (struct sockaddr *)&local, &len);
	for (int i = 0; i < 3; i++)
		cr_expect_eq(pf_tcp_tuple_use((struct sockaddr *)&local, (struct sockaddr *)&server, netlink),
			     PF_TUPLE_BUSY);
	close(netlink);
	close(client);
	close(lfd);
}

/* ---- the decision, a pure function of policy and call ---- */

Test(decide, each_verdict)
{
	struct pf_rule deny_rule;
	const char *why;
	cr_assert_eq(pf_rule_parse("127.0.0.1/32:25", &deny_rule, &why), 0);
	struct pf_app app = {.protocols = PF_PROTO_TCP, .deny = {&deny_rule, 1}};
	struct sockaddr_in smtp = loopback(25), web = loopback(80);
	struct pf_question q = {.policy_usable = true, .app = &app, .needs_port = true,
				.dest = (struct sockaddr *)&web, .dest_len = sizeof(web)};

	cr_expect_eq(pf_decide(&q).verdict, PF_VERDICT_ASSIGN);
	q.needs_port = false;
	cr_expect_eq(pf_decide(&q).verdict, PF_VERDICT_CALL);
	q.dest = (struct sockaddr *)&smtp;
	struct pf_decision d = pf_decide(&q);
	cr_expect(d.verdict == PF_VERDICT_REFUSE && d.event == PF_EVENT_DENY && d.error == EPERM);
	q.mode = PF_MODE_AUDIT;
	d = pf_decide(&q);
	cr_expect(d.verdict == PF_VERDICT_AUDIT && d.error == EPERM);
	q.udp = true;
	cr_expect_eq(pf_decide(&q).verdict, PF_VERDICT_PASS, "udp is not this app's");
	q.app = NULL;
	q.udp = false;
	cr_expect_eq(pf_decide(&q).verdict, PF_VERDICT_PASS, "no app");
	q.policy_usable = false;
	d = pf_decide(&q);
	cr_expect(d.verdict == PF_VERDICT_REFUSE && d.event == PF_EVENT_ERROR && d.error == EPERM);
}

Test(holds, a_release_after_the_clock_was_read_is_recent)
{
	struct pf_hold_ref a, b;

	pf_hold_claim(&state, 7, 5, 1000, QUARANTINE, &a);
	pf_hold_connected(&state, &a);
	pf_hold_release(&state, &a, 1004);
	cr_expect_eq(pf_hold_claim(&state, 7, 5, 1000, QUARANTINE, &b), PF_HOLD_RECENT,
		     "released 4 ms after a claim's clock: not old");
}

Test(holds, an_abortive_close_is_clean_at_once)
{
	struct pf_hold_ref a, b;

	pf_hold_claim(&state, 8, 6, 1000, QUARANTINE, &a);
	pf_hold_connected(&state, &a);
	pf_hold_release(&state, &a, 0);
	cr_expect_eq(pf_hold_claim(&state, 8, 6, 1000, QUARANTINE, &b), PF_HOLD_FREE);
}
