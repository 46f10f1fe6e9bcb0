// SPDX-License-Identifier: MIT
/*
 * The inline reader's re-checks (user/reader.h, viommu_reader_window()), one interleaving at a
 * time. test_interleave.c hooks the loads of bpf/viommu_lookup.h through its macros; the inline
 * reader makes its loads with __atomic_load_n, straight from the caller's loop, so here a load
 * is hooked by the page it reads: the page is made inaccessible, the load faults, the SIGSEGV
 * handler runs one step of "the writer" (docs/concurrency.md) and gives the page back, and the
 * load runs again and reads what the writer left. Single-threaded and deterministic.
 *
 * The reader's copy of an endpoint's window (struct viommu_reader_epw) is built by hand over
 * this file's own memory, as viommu_reader_window_load() would build it: a window of one 2 MiB
 * region at WIN, its piece window of two regions from WIN (the second region is past the
 * window), the endpoint entry's (64-bit) seq. Suite `inline`: a copy that reads a
 * window page's region word first (made while a 2 MiB piece lay in the window); suite
 * `inline_pte_first`: one that reads the PTE first (made with none there).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "reader.h"

#define WIN 0x100000000ull
#define REGION (1ull << VIOMMU_HASH_SHIFT)
#define EP 3u
#define PAGE_IN 5u /* the window page the tests ask for */
#define PA_OLD 0x7000000ull
#define PA_NEW 0x9000000ull /* what the writer's step leaves */
#define RW (VIOMMU_MAP_F_READ | VIOMMU_MAP_F_WRITE)

/* The shared memory the copy points into: a page of PTEs (the window's one leaf holds 512), a
 * page of piece window words, a page holding the window entry's base word; each its own page,
 * so that each can be hooked alone. */
static __u64 *ptes, *words;
static __u64 seq = 4; /* the endpoint entry's seq */
static struct viommu_reader *r;

static __u64 *hooked; /* the page whose next load runs the step */
static void (*step)(void);
static unsigned fired;

static void on_segv(int sig, siginfo_t *si, void *uc)
{
	uintptr_t page = (uintptr_t)hooked;

	(void)uc;
	if (!hooked || (uintptr_t)si->si_addr - page >= 4096) {
		signal(sig, SIG_DFL); /* not ours: the default action, when the load runs again */
		return;
	}
	hooked = NULL;
	fired++;
	mprotect((void *)page, 4096, PROT_READ | PROT_WRITE);
	step();
}

static void hook(__u64 *page, void (*s)(void))
{
	hooked = page;
	step = s;
	cr_assert_eq(mprotect(page, 4096, PROT_NONE), 0);
}

static void setup(void)
{
	struct sigaction sa = { .sa_sigaction = on_segv, .sa_flags = SA_SIGINFO };
	struct viommu_reader_epw *c;

	ptes = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(ptes, MAP_FAILED);
	words = ptes + 512;
	cr_assert_eq(sigaction(SIGSEGV, &sa, NULL), 0);
	r = viommu_reader_alloc();
	cr_assert_not_null(r);
	viommu_reader_tlb_flush(r);
	c = &r->epw[EP % VIOMMU_READER_EPW];
	*c = (struct viommu_reader_epw){
		.ep = EP, .ep_seq = seq, .base = WIN, .span = REGION, .first = ptes, .seqp = &seq,
		.pbase = WIN, .pspan = 2 * REGION,
		.pfirst = words, .wfirst = words,
	};
}

/* The same copy, reading the PTE first. */
static void setup_pte_first(void)
{
	setup();
	r->epw[EP % VIOMMU_READER_EPW].pte_span = REGION;
}

static void teardown(void)
{
	free(r);
	munmap(ptes, 2 * 4096);
}

TestSuite(inline, .init = setup, .fini = teardown);
TestSuite(inline_pte_first, .init = setup_pte_first, .fini = teardown);

/* The writer's steps. The endpoint moved to another domain (W3: its seq moves on), whose
 * translation for the same IOVA is PA_NEW, left where the copy points (the old domain's memory
 * reused). Or the same with a seq whose low half came back to the copy's (2^31 changes
 * later: all 64 bits are compared, ABI v12). */
static void new_translation(void)
{
	ptes[PAGE_IN] = VIOMMU_PTE_MAKE(PA_NEW, RW);
	words[0] = VIOMMU_HASH_DIRECT_MAKE(PA_NEW & ~(REGION - 1), RW);
	words[1] = VIOMMU_HASH_DIRECT_MAKE(PA_NEW & ~(REGION - 1), RW);
}

static void step_endpoint_moved(void)
{
	seq += 2;
	new_translation();
}

static void step_seqs_low_half_came_back(void)
{
	seq += 1ull << 32;
	new_translation();
}

static uint32_t ask(uint64_t iova, struct viommu_answer *a)
{
	struct viommu_query q = { .endpoint = EP, .access = VIOMMU_MAP_F_READ, .iova = iova, .size = 8 };

	memset(a, 0xa5, sizeof(*a));
	return (uint32_t)viommu_reader_window(r, &q, a);
}

/* @iova asked with @page hooked by the writer's step @s: the answer is turned away (0, the
 * caller goes on), and the step ran once, at the hooked load. */
static void assert_turned_away(__u64 *page, void (*s)(void), uint64_t iova)
{
	struct viommu_answer a;

	hook(page, s);
	cr_assert_eq(ask(iova, &a), 0, "answered %u (pa 0x%llx) after the writer's step", a.result,
		     (unsigned long long)a.pa);
	cr_assert_eq(fired, 1);
}

Test(inline, answers_from_its_copy_when_nothing_moves)
{
	struct viommu_answer a;

	ptes[PAGE_IN] = VIOMMU_PTE_MAKE(PA_OLD, RW);
	words[1] = VIOMMU_HASH_DIRECT_MAKE(PA_OLD, RW);
	cr_assert_eq(ask(WIN + PAGE_IN * 4096 + 8, &a), 1);
	cr_assert_eq(a.pa, PA_OLD + 8);
	/* A page that is not mapped: its PTE is 0 and its region's word 0. */
	cr_assert_eq(ask(WIN + 9 * 4096, &a), 2);
	cr_assert_eq(a.result, VIOMMU_XLATE_FAULT);
	/* Past the window, in the piece window: the word. */
	cr_assert_eq(ask(WIN + REGION + 0x1234, &a), 1);
	cr_assert_eq(a.pa, PA_OLD + 0x1234);
	/* The hook itself: the step runs before the hooked load, which reads what it left. */
	hook(ptes, new_translation);
	cr_assert_eq(ask(WIN + PAGE_IN * 4096 + 8, &a), 1);
	cr_assert_eq(fired, 1);
	cr_assert_eq(a.pa, PA_NEW + 8);
}

/* The page's PTE read after the endpoint moved: the seq check after it turns the answer away. */
Test(inline, a_window_page_read_after_its_endpoint_moved_is_not_answered)
{
	ptes[PAGE_IN] = VIOMMU_PTE_MAKE(PA_OLD, RW);
	assert_turned_away(ptes, step_endpoint_moved, WIN + PAGE_IN * 4096);
}

Test(inline, a_window_page_read_after_its_seqs_low_half_came_back_is_not_answered)
{
	ptes[PAGE_IN] = VIOMMU_PTE_MAKE(PA_OLD, RW);
	assert_turned_away(ptes, step_seqs_low_half_came_back, WIN + PAGE_IN * 4096);
}

/* A window miss: the region's word (not a piece), the PTE not present, then the seq check. The
 * endpoint moved at the PTE's load, after the word's: the check turns the answer away. */
Test(inline, a_window_miss_whose_endpoint_moved_before_its_pte_was_read_is_not_answered)
{
	assert_turned_away(ptes, step_endpoint_moved, WIN + 9 * 4096);
}

Test(inline, a_window_miss_whose_seqs_low_half_came_back_before_its_pte_was_read_is_not_answered)
{
	assert_turned_away(ptes, step_seqs_low_half_came_back, WIN + 9 * 4096);
}

/* A region a piece of 1 GiB or more covers: its word is busy while the piece lives (I13), its
 * PTEs 0. Not answered as a miss: the walk finds the piece. */
Test(inline, a_window_page_under_a_larger_piece_is_not_answered_as_a_miss)
{
	struct viommu_answer a;

	words[0] = VIOMMU_PIECE_BUSY;
	cr_assert_eq(ask(WIN + 9 * 4096, &a), 0, "answered %u", a.result);
	words[0] = 0;
	cr_assert_eq(ask(WIN + 9 * 4096, &a), 2);
}

/* The same miss where the writer only removed the region's piece (the word busy, then 0: no
 * seq change): not answered as a miss from a busy word. */
static void step_piece_going(void)
{
	words[0] = VIOMMU_PIECE_BUSY;
}

Test(inline, a_window_miss_whose_region_holds_a_piece_going_is_not_answered)
{
	words[0] = VIOMMU_HASH_DIRECT_MAKE(PA_OLD, RW);
	assert_turned_away(words, step_piece_going, WIN + PAGE_IN * 4096);
}

/* Past the window: the piece window's word read after the endpoint moved. */
Test(inline, a_piece_word_read_after_its_endpoint_moved_is_not_answered)
{
	words[1] = VIOMMU_HASH_DIRECT_MAKE(PA_OLD, RW);
	assert_turned_away(words, step_endpoint_moved, WIN + REGION + 0x1234);
}

Test(inline, a_piece_word_read_after_its_seqs_low_half_came_back_is_not_answered)
{
	words[1] = VIOMMU_HASH_DIRECT_MAKE(PA_OLD, RW);
	assert_turned_away(words, step_seqs_low_half_came_back, WIN + REGION + 0x1234);
}

/* In the window, a region that is one published piece: its word is read first, and answers. */
Test(inline, a_window_page_of_a_published_piece_is_answered_from_its_word)
{
	struct viommu_answer a;

	words[0] = VIOMMU_HASH_DIRECT_MAKE(PA_OLD, RW);
	cr_assert_eq(ask(WIN + PAGE_IN * 4096 + 0x10, &a), 1);
	cr_assert_eq(a.pa, PA_OLD + PAGE_IN * 4096 + 0x10);
	cr_assert_eq(a.ext_start, WIN);
	cr_assert_eq(a.ext_end, WIN + REGION - 1);
}

/* The same word read after the endpoint moved: the seq check after it turns the answer away. */
Test(inline, a_window_pieces_word_read_after_its_endpoint_moved_is_not_answered)
{
	words[0] = VIOMMU_HASH_DIRECT_MAKE(PA_OLD, RW);
	assert_turned_away(words, step_endpoint_moved, WIN + PAGE_IN * 4096);
}

Test(inline, a_window_pieces_word_read_after_its_seqs_low_half_came_back_is_not_answered)
{
	words[0] = VIOMMU_HASH_DIRECT_MAKE(PA_OLD, RW);
	assert_turned_away(words, step_seqs_low_half_came_back, WIN + PAGE_IN * 4096);
}

/* A fresh reader's copies are empty: no query's endpoint matches one (an empty copy's id is its
 * slot's index + 1, which no query of that slot has), whatever the id. */
Test(inline, no_query_is_answered_from_an_empty_copy)
{
	static const uint32_t eps[] = { 0, 1, 15, 16, 17, 0xffff, 0x10000, 0x123456, 0xfffffffe, 0xffffffff };

	viommu_reader_tlb_flush(r);
	for (unsigned i = 0; i < sizeof(eps) / sizeof(eps[0]); i++) {
		struct viommu_query q = { .endpoint = eps[i], .access = VIOMMU_MAP_F_READ, .iova = WIN, .size = 8 };

		cr_assert_neq(viommu_reader_epw_out(&r->epw[eps[i] % VIOMMU_READER_EPW], &q), 0,
			      "endpoint 0x%x matches an empty copy", eps[i]);
	}
}

/* The word first: a window page of a published piece is answered without its PTE being loaded
 * (the PTE page hooked: its load would run the step, which does nothing, and count). */
static void step_nothing(void)
{
}

Test(inline, a_window_page_of_a_published_piece_is_answered_without_loading_its_pte)
{
	struct viommu_answer a;

	words[0] = VIOMMU_HASH_DIRECT_MAKE(PA_OLD, RW);
	hook(ptes, step_nothing);
	cr_assert_eq(ask(WIN + PAGE_IN * 4096 + 0x10, &a), 1);
	cr_assert_eq(a.pa, PA_OLD + PAGE_IN * 4096 + 0x10);
	cr_assert_eq(fired, 0, "the PTE was loaded: the word was not read first");
}

/* ---- a copy that reads the PTE first, and the PTE alone for a miss (made with no piece in the
 * window: the writer moves the entry's seq on before the window's first piece, I13) ---- */

Test(inline_pte_first, answers_a_window_page_from_its_pte_without_loading_its_word)
{
	struct viommu_answer a;

	ptes[PAGE_IN] = VIOMMU_PTE_MAKE(PA_OLD, RW);
	hook(words, step_nothing);
	cr_assert_eq(ask(WIN + PAGE_IN * 4096 + 8, &a), 1);
	cr_assert_eq(a.pa, PA_OLD + 8);
	/* Not present: a miss, from the PTE and the entry's seq. */
	cr_assert_eq(ask(WIN + 9 * 4096, &a), 2);
	cr_assert_eq(a.result, VIOMMU_XLATE_FAULT);
	cr_assert_eq(fired, 0, "the word was loaded");
	hooked = NULL;
	mprotect(words, 4096, PROT_READ | PROT_WRITE);
	/* Present without the access (a write-only page, read): not answered, neither as a hit
	 * nor as a miss (the walk says which fault). */
	ptes[PAGE_IN] = VIOMMU_PTE_MAKE(PA_OLD, VIOMMU_MAP_F_WRITE);
	cr_assert_eq(ask(WIN + PAGE_IN * 4096 + 8, &a), 0, "answered %u", a.result);
}

Test(inline_pte_first, a_window_page_read_after_its_endpoint_moved_is_not_answered)
{
	ptes[PAGE_IN] = VIOMMU_PTE_MAKE(PA_OLD, RW);
	assert_turned_away(ptes, step_endpoint_moved, WIN + PAGE_IN * 4096);
}

Test(inline_pte_first, a_window_page_read_after_its_seqs_low_half_came_back_is_not_answered)
{
	ptes[PAGE_IN] = VIOMMU_PTE_MAKE(PA_OLD, RW);
	assert_turned_away(ptes, step_seqs_low_half_came_back, WIN + PAGE_IN * 4096);
}

/* A miss is the PTE and the seq after it: the endpoint moved at the PTE's load (to a domain
 * whose page it is), or the seq's low half came back, and the answer is turned away. */
Test(inline_pte_first, a_window_miss_whose_endpoint_moved_at_its_pte_load_is_not_answered)
{
	assert_turned_away(ptes, step_endpoint_moved, WIN + 9 * 4096);
}

Test(inline_pte_first, a_window_miss_whose_seqs_low_half_came_back_at_its_pte_load_is_not_answered)
{
	assert_turned_away(ptes, step_seqs_low_half_came_back, WIN + 9 * 4096);
}

/* The window gains its first piece, a 2 MiB one over the page's region (its word the direct
 * value, its PTEs 0): the writer moves the seq of every endpoint in the domain on first
 * (win_flags_store()). The PTE read 0 at that point is not answered as a miss. */
static void step_first_piece(void)
{
	seq += 2;
	words[0] = VIOMMU_HASH_DIRECT_MAKE(PA_NEW & ~(REGION - 1), RW);
}

Test(inline_pte_first, a_window_miss_whose_window_gained_its_first_piece_at_its_pte_load_is_not_answered)
{
	assert_turned_away(ptes, step_first_piece, WIN + 9 * 4096);
}

/* Past the window, the piece window's word, as in a word-first copy. */
Test(inline_pte_first, a_piece_word_past_the_window_read_after_its_endpoint_moved_is_not_answered)
{
	struct viommu_answer a;

	words[1] = VIOMMU_HASH_DIRECT_MAKE(PA_OLD, RW);
	cr_assert_eq(ask(WIN + REGION + 0x1234, &a), 1);
	cr_assert_eq(a.pa, PA_OLD + 0x1234);
	assert_turned_away(words, step_endpoint_moved, WIN + REGION + 0x1234);
}
