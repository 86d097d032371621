/* Shared-memory layouts of aip's segments. The one place they are defined;
 * _layout.pxd mirrors them for Cython. Any change to a struct here bumps
 * AIP_LAYOUT_VERSION, so that a process built against another layout gets a
 * clear error on attach instead of reading garbage.
 *
 * Every segment starts with aip_segment_header. Words shared between
 * processes sit on their own 64-byte cache lines when different processes
 * write them, so that one writer does not slow the others (false sharing).
 * All multi-byte fields are native-endian: segments never leave the host. */
#ifndef AIP_LAYOUT_H
#define AIP_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#define AIP_LAYOUT_VERSION 2u
#define AIP_CACHE_LINE 64
#define AIP_MAGIC_SLOT_TABLE 0x53504941u  /* "AIPS" in memory order */
#define AIP_MAGIC_RESULT_RING 0x52504941u /* "AIPR" */

/* Status codes of the core's hot paths; _status.pyx turns them into typed
 * Python exceptions at the one boundary. */
typedef enum aip_status {
    AIP_OK = 0,
    AIP_EMPTY = 1,       /* nothing to take right now */
    AIP_FULL = 2,        /* no room right now */
    AIP_TIMEOUT = 3,     /* a blocking call ran out of time */
    AIP_CLOSED = 4,      /* the segment was shut down by its owner */
    AIP_AGAIN = 5,       /* a wait slice ended: re-check signals, then retry */
    AIP_WRONG_STATE = 6, /* the slot is not in the state this call needs */
    AIP_NOT_OWNER = 7,   /* the slot is held by another worker (or reclaimed) */
    AIP_NO_LANE = 8,     /* every producer lane of the ring is taken */
    AIP_BAD_INDEX = 9,   /* slot index out of range */
    AIP_CORRUPT = 10     /* a value read from the segment is out of range */
} aip_status;

/* The first 64 bytes of every segment. */
typedef struct aip_segment_header {
    uint32_t magic;          /* AIP_MAGIC_*: stored last at creation (release) */
    uint32_t layout_version; /* AIP_LAYOUT_VERSION of the creator */
    uint64_t total_size;     /* bytes of the whole segment, header included */
    uint64_t generation;     /* random per creation: tells re-creations apart */
    uint32_t creator_pid;    /* process that created it (finds orphans) */
    uint32_t closed;         /* atomic: 1 once shut down; sleepers wake and stop */
    uint32_t header_size;    /* bytes of the kind-specific header, this one included */
    uint32_t _pad0;          /* alignment */
    uint64_t pid_namespace;  /* creator's PID namespace (Linux inode), 0 where unknown */
    uint64_t creator_start;  /* start time of the creator's process (aip_proc.h): with
                                creator_pid, tells a live creator from a recycled pid */
    uint8_t _reserved[8];    /* pads to one cache line */
} aip_segment_header;

/* A word to sleep on, with the count of its sleepers, on a line of its own.
 * The handshake that makes a wake never lost is in _sync.pxd. */
typedef struct aip_wake_line {
    uint32_t seq;      /* bumped by a waker that saw sleepers */
    uint32_t sleepers; /* processes asleep, or about to sleep, on seq */
    uint8_t _pad[56];  /* to the end of the line */
} aip_wake_line;

/* ---- SlotTable --------------------------------------------------------- */

/* Slot states. A slot moves only by one CAS on its ctl word:
 *   FREE -> WRITING   manager (acquire_free)
 *   WRITING -> READY  manager, after the frame bytes (publish, release order)
 *   WRITING -> FREE   manager gives up a write (abort)
 *   READY -> READING  one worker wins the CAS (claim)
 *   READY -> WRITING  manager drops a frame nobody claimed yet (drop_oldest)
 *   READING -> FREE   the owning worker, after its result is out (release)
 *   READING -> READY  manager, for a dead owner (reclaim)               */
typedef enum aip_slot_state {
    AIP_SLOT_FREE = 0,
    AIP_SLOT_WRITING = 1,
    AIP_SLOT_READY = 2,
    AIP_SLOT_READING = 3
} aip_slot_state;

/* ctl = state | owner << 8 | generation << 32. Packing owner and
 * generation into the CAS word makes "release only if I still own it" and
 * "this slot still holds the frame I looked at" one atomic check: a slot
 * that was reclaimed and re-claimed in between has a new owner or a new
 * generation, so a stale CAS fails instead of freeing someone else's frame
 * (the ABA problem). */
#define AIP_CTL_STATE(ctl) ((uint32_t)((ctl) & 0xFFu))
#define AIP_CTL_OWNER(ctl) ((uint32_t)(((ctl) >> 8) & 0xFFFFFFu))
#define AIP_CTL_GENERATION(ctl) ((uint32_t)((ctl) >> 32))
#define AIP_CTL_MAKE(state, owner, gen)                                        \
    ((uint64_t)(state) | ((uint64_t)((owner) & 0xFFFFFFu) << 8) |              \
     ((uint64_t)(gen) << 32))
#define AIP_NO_OWNER 0xFFFFFFu /* owner of a slot nobody reads */
#define AIP_MAX_WORKER 0xFFFFFEu
#define AIP_ANY_WORKER 0xFFFFFFFFu /* a frame any worker may take (pull mode) */

typedef struct aip_slot {
    uint64_t ctl;          /* state | owner << 8 | generation << 32, CAS only */
    uint64_t frame_id;     /* written while WRITING, read after acquire of ctl */
    uint32_t target; /* backend meant to take it, or AIP_ANY_WORKER */
    uint32_t _pad0;        /* keeps the timestamps 8-byte aligned */
    int64_t t_publish_ns;  /* CLOCK_MONOTONIC when it became READY */
    int64_t t_claim_ns;    /* when a worker claimed it */
    int64_t t_release_ns;  /* when its worker released it */
    uint8_t _pad1[16];     /* one slot per cache line: claims don't collide */
} aip_slot;

typedef struct aip_slot_table_header {
    aip_segment_header seg; /* common header, magic AIP_MAGIC_SLOT_TABLE */
    uint32_t n_slots;       /* number of slots */
    uint32_t n_wake;        /* wake lines of targeted claims (target % n_wake); one
                               more follows for claims that take any target */
    uint64_t slot_bytes;    /* payload bytes per slot (a frame), may be 0 */
    uint64_t wake_offset;   /* from segment start to aip_wake_line[n_wake + 1] */
    uint64_t slots_offset;  /* from segment start to aip_slot[n_slots] */
    uint64_t data_offset;   /* from segment start to the payloads (page aligned) */
    uint64_t data_stride;   /* bytes between two payloads (64-byte aligned) */
    uint8_t _pad1[16];      /* to the end of the line */
    /* Woken on release/abort/drop/shutdown: the manager sleeps here. */
    aip_wake_line free_wake;
} aip_slot_table_header;

/* ---- ResultRing -------------------------------------------------------- */

/* A role (producer lane, consumer) is held by a token, pid << 32 | handle
 * number, beside the start time of that pid's process: a pid that was
 * reused by another process has another start time. The taker CASes the
 * token in with this bit set, writes the start time, then clears the bit
 * (release), so that nobody compares a token with its predecessor's start. */
#define AIP_TOKEN_PENDING (1ull << 63)

/* One single-producer lane per producer process: a dead producer can only
 * ever leave its own lane half-written, and since its tail is published
 * after the record bytes, the consumer never sees that half record and is
 * never blocked by it. */
typedef struct aip_lane {
    /* Line 0: written by the lane's producer. */
    uint64_t tail;          /* records ever published; stored with release */
    uint64_t owner_token;   /* atomic, CAS: producer handle (pid << 32 | n), 0 = free;
                               AIP_TOKEN_PENDING while owner_start is being written */
    uint64_t owner_start;   /* start time of the owner's process (tells PID reuse) */
    uint32_t space_sleeping; /* producers asleep (or about to be) on space_seq */
    uint8_t _pad0[36];      /* to the end of the line */
    /* Line 1: written by the consumer. */
    uint64_t head;          /* records ever consumed; stored with release */
    uint32_t space_seq;     /* bumped when the consumer frees room */
    uint8_t _pad1[52];      /* to the end of the line */
} aip_lane;

typedef struct aip_ring_header {
    aip_segment_header seg; /* common header, magic AIP_MAGIC_RESULT_RING */
    uint32_t capacity;      /* records per lane, a power of two */
    uint32_t record_size;   /* bytes per record; cells are packed, no padding */
    uint32_t n_lanes;       /* producer lanes (max concurrent producers) */
    uint32_t _pad0;         /* alignment */
    uint64_t lanes_offset;  /* from segment start to aip_lane[n_lanes] */
    uint64_t cells_offset;  /* from segment start to the cells of lane 0 */
    uint64_t consumer_token; /* atomic, CAS: consumer handle (pid << 32 | n), 0 = none */
    uint64_t consumer_start; /* start time of the consumer's process */
    uint8_t _pad1[16];      /* to the end of the line */
    /* Own line: the consumer's sleep word. */
    uint32_t data_seq;      /* bumped by a producer that saw the consumer sleep */
    uint32_t consumer_sleeping; /* consumers asleep (or about to be) on data_seq */
    uint8_t _pad2[56];      /* to the end of the line */
} aip_ring_header;

_Static_assert(sizeof(aip_segment_header) == AIP_CACHE_LINE, "segment header is one line");
_Static_assert(sizeof(aip_slot) == AIP_CACHE_LINE, "a slot is one line");
_Static_assert(sizeof(aip_wake_line) == AIP_CACHE_LINE, "a wake line is one line");
_Static_assert(sizeof(aip_slot_table_header) == 3 * AIP_CACHE_LINE, "slot table header layout");
_Static_assert(sizeof(aip_lane) == 2 * AIP_CACHE_LINE, "a lane is two lines");
_Static_assert(sizeof(aip_ring_header) == 3 * AIP_CACHE_LINE, "ring header layout");

#endif /* AIP_LAYOUT_H */
