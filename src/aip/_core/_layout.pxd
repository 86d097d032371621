# C declarations of the shared-memory layouts (include/aip_layout.h), the
# atomics (include/aip_atomic.h), the sleep/wake words (include/aip_wait.h)
# and process identity (include/aip_proc.h).
# Declarations only: the classes that use them are in the other .pxd files.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t


cdef extern from "aip_debug.h":
    int AIP_DEBUG  # 1 in a debug build: invariant checks on
    void AIP_ASSERT(bint cond) noexcept nogil


cdef extern from "aip_layout.h":
    unsigned int AIP_LAYOUT_VERSION
    unsigned int AIP_CACHE_LINE
    unsigned int AIP_MAGIC_SLOT_TABLE
    unsigned int AIP_MAGIC_RESULT_RING

    ctypedef enum aip_status:
        AIP_OK
        AIP_EMPTY
        AIP_FULL
        AIP_TIMEOUT
        AIP_CLOSED
        AIP_AGAIN
        AIP_WRONG_STATE
        AIP_NOT_OWNER
        AIP_NO_LANE
        AIP_BAD_INDEX
        AIP_CORRUPT

    ctypedef struct aip_segment_header:
        uint32_t magic           # AIP_MAGIC_*: stored last at creation
        uint32_t layout_version  # AIP_LAYOUT_VERSION of the creator
        uint64_t total_size      # bytes of the whole segment
        uint64_t generation      # random per creation
        uint32_t creator_pid     # process that created it
        uint32_t closed          # atomic: 1 once shut down
        uint32_t header_size     # bytes of the kind-specific header
        uint64_t pid_namespace   # creator's PID namespace, 0 where unknown
        uint64_t creator_start   # start time of the creator's process

    ctypedef struct aip_wake_line:
        uint32_t seq             # bumped by a waker that saw sleepers
        uint32_t sleepers        # sleepers on seq

    cdef enum aip_slot_state:
        AIP_SLOT_FREE
        AIP_SLOT_WRITING
        AIP_SLOT_READY
        AIP_SLOT_READING

    uint32_t AIP_CTL_STATE(uint64_t ctl) noexcept nogil
    uint32_t AIP_CTL_OWNER(uint64_t ctl) noexcept nogil
    uint32_t AIP_CTL_GENERATION(uint64_t ctl) noexcept nogil
    uint64_t AIP_CTL_MAKE(uint32_t state, uint32_t owner, uint32_t gen) noexcept nogil
    unsigned int AIP_NO_OWNER
    unsigned int AIP_MAX_WORKER
    unsigned int AIP_ANY_WORKER
    unsigned long long AIP_TOKEN_PENDING

    ctypedef struct aip_slot:
        uint64_t ctl             # state | owner << 8 | generation << 32
        uint64_t frame_id        # written while WRITING
        uint32_t target    # backend meant to take it, or AIP_ANY_WORKER
        int64_t t_publish_ns     # when it became READY
        int64_t t_claim_ns       # when a worker claimed it
        int64_t t_release_ns     # when its worker released it

    ctypedef struct aip_slot_table_header:
        aip_segment_header seg   # common header
        uint32_t n_slots         # number of slots
        uint32_t n_wake          # wake lines of targeted claims (+1 for any-target claims)
        uint64_t slot_bytes      # payload bytes per slot
        uint64_t wake_offset     # offset of aip_wake_line[n_wake + 1]
        uint64_t slots_offset    # offset of aip_slot[n_slots]
        uint64_t data_offset     # offset of the payloads
        uint64_t data_stride     # bytes between two payloads
        aip_wake_line free_wake  # the manager sleeps here for a FREE slot

    ctypedef struct aip_lane:
        uint64_t tail            # records published (producer)
        uint64_t owner_token     # producer handle, 0 = free
        uint64_t owner_start     # start time of the owner's process
        uint32_t space_sleeping  # producers asleep on space_seq
        uint64_t head            # records consumed (consumer)
        uint32_t space_seq       # bumped when the consumer frees room

    ctypedef struct aip_ring_header:
        aip_segment_header seg   # common header
        uint32_t capacity        # records per lane, power of two
        uint32_t record_size     # bytes per record, cells packed
        uint32_t n_lanes         # producer lanes
        uint64_t lanes_offset    # offset of aip_lane[n_lanes]
        uint64_t cells_offset    # offset of lane 0's cells
        uint64_t consumer_token  # consumer handle, 0 = none
        uint64_t consumer_start  # start time of the consumer's process
        uint32_t data_seq        # consumer's wake word
        uint32_t consumer_sleeping  # consumers asleep on data_seq


cdef extern from "aip_atomic.h" nogil:
    uint32_t aip_load_u32_acquire(const uint32_t *p) noexcept
    uint64_t aip_load_u64_acquire(const uint64_t *p) noexcept
    uint32_t aip_load_u32_relaxed(const uint32_t *p) noexcept
    uint64_t aip_load_u64_relaxed(const uint64_t *p) noexcept
    void aip_store_u32_relaxed(uint32_t *p, uint32_t v) noexcept
    void aip_store_u64_relaxed(uint64_t *p, uint64_t v) noexcept
    void aip_store_u32_release(uint32_t *p, uint32_t v) noexcept
    void aip_store_u64_release(uint64_t *p, uint64_t v) noexcept
    bint aip_cas_u64(uint64_t *p, uint64_t *expected, uint64_t desired) noexcept
    bint aip_cas_u32(uint32_t *p, uint32_t *expected, uint32_t desired) noexcept
    uint32_t aip_fetch_add_u32(uint32_t *p, uint32_t v) noexcept
    uint32_t aip_fetch_sub_u32(uint32_t *p, uint32_t v) noexcept
    void aip_fence_seq_cst() noexcept
    void aip_cpu_relax() noexcept


cdef extern from "aip_wait.h" nogil:
    int AIP_WAIT_WOKEN
    int AIP_WAIT_TIMEOUT
    int AIP_WAIT_INTERRUPTED
    int AIP_WAIT_CHANGED
    const char *AIP_WAIT_BACKEND
    int64_t aip_now_ns() noexcept
    int aip_wait_u32(uint32_t *addr, uint32_t expected, int64_t timeout_ns) noexcept
    void aip_wake_all(uint32_t *addr) noexcept
    void aip_wake_one(uint32_t *addr) noexcept


cdef extern from "aip_proc.h" nogil:
    int AIP_PROC_FOUND
    int AIP_PROC_GONE
    int AIP_PROC_UNKNOWN
    int aip_process_start(int pid, uint64_t *start) noexcept
    uint64_t aip_pid_namespace() noexcept
