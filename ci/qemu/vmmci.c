/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * OpenBSD vmd(8) "vmmci" (VMM Control Interface) device model.
 *
 * A plain conventional PCI device (not QEMU's virtio-pci) that reproduces the
 * guest-visible behaviour of the vmmci device OpenBSD's vmd gives every VM:
 * a legacy ("0.9") virtio header in a 4 KiB I/O BAR, no virtqueues, INTx
 * only.  Builds against QEMU 7.2 (Debian 12) and 10.0 (Debian 13), see
 * "QEMU version compatibility" below.  The contract is the project's
 * vmmci-device.md specification (sections 1-7, requirements M1-M19).
 *
 * PCI identity (M1): 0b5d:0777 rev 0, class 0x078000, subsystem 0b5d:ffff,
 * INTA#, BAR0 = I/O, 0x1000 bytes, no other BARs, no ROM, no MSI/MSI-X, no
 * capabilities.
 *
 * BAR0 register decode (exactly by start offset, any width 1/2/4; a read
 * returns the low bytes of the 32-bit value with all side effects):
 *    0 DEVICE_FEATURES   R: "features" property (7)        W: ignored
 *    4 GUEST_FEATURES    R/W 32 bit, stored verbatim
 *    8 QUEUE_PFN         R/W 32 bit, no effect
 *   12 QUEUE_SIZE        R: 0                              W: ignored
 *   14 QUEUE_SELECT      R/W 16 bit, no effect
 *   16 QUEUE_NOTIFY      R/W 16 bit, no effect, no interrupt
 *   18 DEVICE_STATUS     R/W 8 bit, no side effects (not even for 0)
 *   19 ISR               R: value (0 or 2), then ISR := 0, INTx lowered
 *   20 COMMAND           R: current command   W: acknowledgement (below)
 *   24 TIME_SEC low      R: latch host time, return seconds mod 2^32
 *   28 TIME_SEC high     R: 0 (vmd's "<< 32" quirk)
 *   32 TIME_USEC low     R: microseconds of the last latch (0 if none)
 *   36 TIME_USEC high    R: 0
 * (The "fault" property changes what the TIME_* registers return, below.)
 * Any other offset: reads return "unmatched-read" (truncated), writes are
 * ignored; both are logged with LOG_GUEST_ERROR (-d guest_errors).  vmd
 * returns the guest's own EAX for unmatched reads, which cannot be
 * reproduced here.  Writes narrower than 4 bytes to COMMAND and
 * GUEST_FEATURES use the zero-extended value (vmd would consume all of the
 * guest's EAX) and are logged with LOG_GUEST_ERROR.
 *
 * Host request (vmd vmmci_ctl): fails if DEVICE_STATUS lacks DRIVER_OK;
 * no-op if equal to the current command; SHUTDOWN/REBOOT: command := value,
 * ISR := 2, INTx raised, timer := short-timeout-ms; SYNCRTC: only if
 * GUEST_FEATURES bit 2 is set: command := 3, ISR := 2, INTx raised, no timer.
 *
 * Guest write of v to COMMAND (vmd vmmci_ack, virtio.c r1.127):
 *   0: nothing;  1: command 0 -> timer := short (guest power-off notice),
 *   command 1 -> timer := long, else nothing;  2: command 2 -> timer :=
 *   long, else nothing;  3: command := 0;  other: logged, ignored.
 * Acks never clear a SHUTDOWN/REBOOT command and never touch ISR.
 *
 * Timer expiry powers the VM off (qemu_system_shutdown_request), it never
 * resets it.  The command timer runs on QEMU_CLOCK_REALTIME, i.e. it keeps
 * running while the VM is paused, like vmd's libevent timer.
 *
 * ------------------------------------------------------------------------
 * QOM / QMP interface (qom-get / qom-set on the device's path, e.g.
 * /machine/peripheral/<id> when created with -device vmmci,id=<id>):
 *
 * Set at creation only (-device vmmci,<name>=<value>):
 *   short-timeout-ms  uint32  request/notice timeout, default 3000
 *   long-timeout-ms   uint32  timeout after a matching ack, default 120000
 *   unmatched-read    uint32  value returned by unmatched reads, default
 *                             0xffffffff (truncated to the access width)
 *   bar-mmio          bool    test only: BAR0 a memory BAR, default off
 *   intx              bool    test only: off = no interrupt pin, default on
 *   time-probe        bool    test only: the time probe in BAR1 (below),
 *                             default off
 *
 * Read/write at any time:
 *   request        string  write "stop", "shutdown", "reboot" or "syncrtc";
 *                          reads back the last accepted request ("" if none).
 *       stop     = vmctl stop: raise REBOOT (2).  If DRIVER_OK is clear the
 *                  VM is powered off at once (end-reason
 *                  "stop-without-driver").  Marks a stop pending (below).
 *                  A second stop while one is pending does nothing (vmd's
 *                  vmm process does not forward it).
 *       shutdown = raise SHUTDOWN (1); reboot = raise REBOOT (2).  Both mark
 *                  a stop pending.  With DRIVER_OK clear: QMP error,
 *                  nothing changes.
 *       syncrtc  = raise SYNCRTC (3) (only if the guest negotiated bit 2,
 *                  otherwise silently nothing).  DRIVER_OK clear: QMP error.
 *       anything else: QMP error.
 *   host-offset-ns int     offset added to the host clock the device reports
 *                          (TIME_* registers, auto-syncrtc tick), default 0
 *   host-skew-ppb  int     rate skew of that clock in parts per billion,
 *                          applied from the moment it is set (changing it
 *                          never makes the clock jump), default 0
 *   auto-syncrtc   bool    default true: a 1 s tick (QEMU_CLOCK_VIRTUAL, so
 *                          it stops while the VM is paused, like vmd's RTC
 *                          tick) raises SYNCRTC when the modelled host wall
 *                          clock advanced by more than 5 whole seconds since
 *                          the previous tick (vmd mc146818.c rtc_fire1).  A
 *                          pause longer than ~5 s, or a forward step of
 *                          host-offset-ns of more than 5 s, thus raises
 *                          SYNCRTC on the next tick (<= 1 s after `cont`).
 *   verbose        bool    default false: log requests, raises, acks and
 *                          timer events to stderr
 *
 * Fault injection, read/write at any time (a hostile or faulty host).
 * features, fault and raise keep their values across a system reset, the
 * storm stops; none of them is migrated (a migration target uses its own
 * -device features value and starts with fault=none and no storm):
 *   features       uint32  DEVICE_FEATURES; creation default 7, and a
 *                          qom-set after realize changes what later reads
 *                          return (feature bits withdrawn by the host)
 *   status         uint8   DEVICE_STATUS; a qom-set writes it like the
 *                          guest would, without side effects (0 models a
 *                          host that clears DRIVER_OK).  Reset sets it to 0,
 *                          so a -device value is overwritten at start-up.
 *   fault          string  default "none"; reads the current mode; an
 *                          unknown value is a QMP error.  Only what the
 *                          TIME_* registers return changes; the host clock
 *                          (host-offset-ns, skew, auto-syncrtc) does not:
 *       none              normal behaviour
 *       time-usec-invalid TIME_USEC low = latched microseconds + 1000000
 *       time-sec-zero     TIME_SEC low reads 0 (the latch still happens,
 *                         TIME_USEC is normal)
 *       time-sec-high     TIME_SEC high (offset 28) reads 1 instead of 0
 *       time-backwards    each TIME_SEC latch is exactly 1 s earlier than
 *                         the previous one; the first latch after "fault"
 *                         is set is the host time - 1 s.  TIME_USEC is that
 *                         sample's microseconds (so it stays the same).
 *       time-stale-5ms    each latch is the host clock of 5 ms before:
 *                         plausible, consistent, and wrong, which nothing
 *                         reading the TIME_* registers can tell; the
 *                         test-only time probe still stamps the true host
 *                         clock (the negative control of checks that must
 *                         not share the registers)
 *       time-random       each latch takes random 64-bit seconds and
 *                         microseconds (all four dwords random), from
 *                         QEMU's guest PRNG (qemu_guest_getrandom_nofail,
 *                         deterministic with -seed).  The high dwords read
 *                         0 again in the other modes.
 *   raise          uint32  a raw, hostile raise: COMMAND := value, ISR := 2,
 *                          INTx raised, raise-count/-cmd/-time-ns updated.
 *                          No DRIVER_OK check, no same-value suppression,
 *                          no timer, no stop pending.  Raising the current
 *                          command is a spurious interrupt.  Guest acks
 *                          then follow the usual rules (a matching ack of a
 *                          raised 1 or 2 arms the long timer).  Reads the
 *                          last value written (0 if none).  Realized device
 *                          only.
 *   storm          string  "" (default, stopped) or colon-separated decimal
 *                          uint32 command values, e.g. "3" or "3:7:0:42":
 *                          every storm-interval-us of QEMU_CLOCK_VIRTUAL
 *                          (it stops while the VM is paused) a raw raise of
 *                          the next value in rotation, the first one an
 *                          interval after the set.  Setting a list
 *                          restarts the rotation and storm-count; "" stops
 *                          the storm and keeps storm-count.  A malformed
 *                          list is a QMP error and changes nothing.  A
 *                          system reset stops the storm (storm reads ""
 *                          afterwards).  Realized device only.
 *   storm-interval-us uint32  default 1000, minimum 100; a change while a
 *                          storm runs restarts the interval from now
 *
 * Read-only (observation):
 *   command         uint32  current command slot (0..3, or any value a
 *                           raise/storm put there)
 *   guest-features  uint32  GUEST_FEATURES
 *   storm-count     uint32  raises done by the storm since it was last set
 *                           to a non-empty list
 *   driver-ok       bool    DEVICE_STATUS & 4
 *   isr             uint8   ISR (0 or 2); equals the INTx level
 *   stop-pending    bool    a stop/shutdown/reboot request was raised
 *   raise-count     uint32  number of interrupts raised so far (also
 *                           counts raise and storm)
 *   raise-time-ns   int     host CLOCK_REALTIME (ns) of the last raise, 0
 *   raise-cmd       uint32  command of the last raise (0 if none)
 *   last-ack-ns     int     host CLOCK_REALTIME (ns) of the last COMMAND
 *                           write, 0 if none
 *   last-ack-value  int     value of the last COMMAND write, -1 if none
 *   acks            string  last 16 COMMAND writes, oldest first,
 *                           "value:ns,value:ns,..." ("" if none)
 *   status-log      string  last 16 guest writes of DEVICE_STATUS, in the
 *                           same form (a driver's resets show as 0)
 *   end-reason      string  "" | "stop-without-driver" | "timer-expired" |
 *                           "reset-after-stop"
 *   timer-armed-ms  int     remaining ms of the command timer, -1 if idle
 *   host-time-ns    int     the modelled host clock now (ns since epoch)
 *   time-probe-log  string  with time-probe=on: the last 64 samples of the
 *                           time probe, "t1:host:t2,..." oldest first;
 *                           writing any value empties it
 *
 * Test-only time probe (time-probe=on; vmd has nothing like it): a second
 * I/O BAR, BAR1, of 16 bytes, taking aligned 32-bit writes only.  The
 * guest writes a CLOCK_REALTIME reading t1 (ns) to +0 (low) and +4 (high),
 * then a reading t2 taken after that write to +8 and +12.  The write to +4
 * is stamped in the I/O handler with the host clock this device reports
 * (CLOCK_REALTIME in ns, not the microseconds of the time registers, plus
 * host-offset-ns and the host-skew-ppb drift): the stamp lies between t1
 * and t2 on the guest's clock, so guest - host is known within (t2 - t1)
 * without the time registers or the driver's estimator.
 * The observation properties are not reset by a system reset (the guest
 * visible state is); stop-pending is.
 *
 * When the device ends the VM it prints one line to stderr:
 *   "vmmci: end-reason=<reason>: <details>"
 *
 * Guest reset while a stop is pending (M14): vmd does not restart a VM that
 * resets while it is marked as shutting down.  QEMU (7.2 and 10.0) has that
 * policy as a global: reboot_action (-action reboot=shutdown, -no-reboot),
 * consulted by qemu_system_reset_request(), which then requests a shutdown
 * instead of a reset.  The device sets reboot_action = shutdown while a stop
 * is pending (and restores the previous value on device reset / unrealize),
 * so a triple fault, the 0xcf9/keyboard-controller reset or a watchdog reset
 * never resets the machine and no guest code runs after it.  A shutdown
 * notifier sees the resulting SHUTDOWN_CAUSE_GUEST_RESET and records
 * end-reason "reset-after-stop".  (A qemu_register_reset() handler calling
 * qemu_system_shutdown_request() would also work but lets the reset happen
 * and the vCPUs run BIOS code before the main loop notices.)  Note that a
 * QMP system_reset during a pending stop is turned into a power-off too.
 *
 * SHUTDOWN causes used for QMP's SHUTDOWN event: "stop-without-driver" ->
 * host-qmp-quit; "timer-expired" -> guest-shutdown; "reset-after-stop" ->
 * guest-reset (from QEMU itself).  All honour -action shutdown=pause
 * (-no-shutdown), so a harness can still qom-get the state afterwards.
 *
 * Known divergences from vmd: unmatched reads (poison value instead of the
 * guest's EAX); narrow writes to COMMAND/GUEST_FEATURES (zero-extended
 * instead of the full EAX); QEMU's PCI core sets PCI_STATUS_INTERRUPT (0x08)
 * in the config-space status word while INTx is asserted (vmd: always 0);
 * the I/O BAR is decoded only when the PCI command register enables I/O
 * (firmware does that; vmd ignores the command register).
 */

#include "qemu/osdep.h"
#include "qemu/log.h"
#include "qemu/module.h"
#include "qemu/timer.h"
#include "qemu/notify.h"
#include "qemu/cutils.h"
#include "qemu/guest-random.h"
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "hw/pci/pci.h"
#include "hw/qdev-properties.h"
#include "migration/vmstate.h"
#include "qom/object.h"

/*
 * QEMU version compatibility: one source for QEMU 7.2 (Debian 12) and 10.0
 * (Debian 13).  QEMU_VERSION_MAJOR/MINOR come from config-host.h, which
 * qemu/osdep.h includes.  Each guard names the release that made the change.
 */
#define VMMCI_QEMU_VERSION (QEMU_VERSION_MAJOR * 100 + QEMU_VERSION_MINOR)

#if VMMCI_QEMU_VERSION >= 1000          /* include/sysemu -> include/system */
#include "system/runstate.h"
#include "system/runstate-action.h"
#else
#include "sysemu/runstate.h"
#include "sysemu/runstate-action.h"
#endif

#if VMMCI_QEMU_VERSION >= 800           /* PCIDevice moved out of pci.h */
#include "hw/pci/pci_device.h"
#endif

#if VMMCI_QEMU_VERSION >= 1000
/* const Property arrays, counted with ARRAY_SIZE, no terminator */
#define VMMCI_PROPS_CONST const
#define VMMCI_PROPS_END
#else
#define VMMCI_PROPS_CONST
#define VMMCI_PROPS_END DEFINE_PROP_END_OF_LIST(),
#endif

#define TYPE_VMMCI "vmmci"
OBJECT_DECLARE_SIMPLE_TYPE(VMMCIState, VMMCI)

#define PCI_VENDOR_ID_OPENBSD           0x0b5d
#define PCI_DEVICE_ID_OPENBSD_CONTROL   0x0777
#define PCI_SUBSYSTEM_ID_VIRTIO_VMMCI   0xffff
#define VMMCI_CLASS_COMMUNICATIONS_MISC 0x0780

#define VMMCI_BAR_SIZE 0x1000
#define VMMCI_PROBE_BAR_SIZE 16
#define VMMCI_PROBE_LOG 64

/* Legacy virtio header, no MSI-X: device config starts at 20. */
#define VMMCI_REG_DEVICE_FEATURES 0
#define VMMCI_REG_GUEST_FEATURES  4
#define VMMCI_REG_QUEUE_PFN       8
#define VMMCI_REG_QUEUE_SIZE      12
#define VMMCI_REG_QUEUE_SELECT    14
#define VMMCI_REG_QUEUE_NOTIFY    16
#define VMMCI_REG_DEVICE_STATUS   18
#define VMMCI_REG_ISR             19
#define VMMCI_REG_COMMAND         20
#define VMMCI_REG_TIME_SEC_LO     24
#define VMMCI_REG_TIME_SEC_HI     28
#define VMMCI_REG_TIME_USEC_LO    32
#define VMMCI_REG_TIME_USEC_HI    36

#define VMMCI_STATUS_DRIVER_OK    0x04
#define VMMCI_ISR_CONFIG_CHANGE   0x02

#define VMMCI_F_TIMESYNC          (1u << 0)
#define VMMCI_F_ACK               (1u << 1)
#define VMMCI_F_SYNCRTC           (1u << 2)

enum {
    VMMCI_NONE = 0,
    VMMCI_SHUTDOWN = 1,
    VMMCI_REBOOT = 2,
    VMMCI_SYNCRTC = 3,
};

#define VMMCI_ACK_HISTORY   16
#define VMMCI_TICK_NS       NANOSECONDS_PER_SECOND
#define VMMCI_SYNC_DRIFT_S  5
#define VMMCI_USEC_PER_SEC  1000000u

#define VMMCI_STORM_INTERVAL_US_DEFAULT 1000
#define VMMCI_STORM_INTERVAL_US_MIN     100

/* "fault" property: what the TIME_* registers return. */
typedef enum VMMCIFault {
    VMMCI_FAULT_NONE,
    VMMCI_FAULT_TIME_USEC_INVALID,
    VMMCI_FAULT_TIME_SEC_ZERO,
    VMMCI_FAULT_TIME_SEC_HIGH,
    VMMCI_FAULT_TIME_BACKWARDS,
    VMMCI_FAULT_TIME_RANDOM,
    VMMCI_FAULT_TIME_STALE,
    VMMCI_FAULT__MAX,
} VMMCIFault;

static const char *const vmmci_fault_names[VMMCI_FAULT__MAX] = {
    [VMMCI_FAULT_NONE] = "none",
    [VMMCI_FAULT_TIME_USEC_INVALID] = "time-usec-invalid",
    [VMMCI_FAULT_TIME_SEC_ZERO] = "time-sec-zero",
    [VMMCI_FAULT_TIME_SEC_HIGH] = "time-sec-high",
    [VMMCI_FAULT_TIME_BACKWARDS] = "time-backwards",
    [VMMCI_FAULT_TIME_RANDOM] = "time-random",
    [VMMCI_FAULT_TIME_STALE] = "time-stale-5ms",
};

typedef struct VMMCIAck {
    uint32_t value;
    int64_t ns;
} VMMCIAck;

struct VMMCIState {
    PCIDevice parent_obj;

    MemoryRegion bar;

    /* Guest-visible state (§2), reset by M15. */
    uint32_t guest_features;
    uint32_t queue_pfn;
    uint16_t queue_select;
    uint16_t queue_notify;
    uint8_t status;
    uint8_t isr;
    uint32_t cmd;
    uint32_t latch_sec;
    uint32_t latch_usec;
    uint32_t latch_sec_hi;      /* time-random only, not migrated */
    uint32_t latch_usec_hi;     /* time-random only, not migrated */

    /* Command timer (QEMU_CLOCK_REALTIME). */
    QEMUTimer *cmd_timer;
    int64_t timer_remaining_ns; /* migration only, -1 = not armed */

    /* SYNCRTC auto trigger (QEMU_CLOCK_VIRTUAL). */
    QEMUTimer *tick_timer;
    int64_t tick_prev_ns;       /* modelled host time at the last tick */
    bool auto_syncrtc;

    /* Modelled host clock. */
    int64_t host_offset_ns;
    int64_t skew_ppb;
    int64_t skew_anchor_ns;     /* real time when the skew was last set */
    int64_t skew_base_ns;       /* skew contribution accumulated before */

    /* Fault injection (host side: kept across reset, not migrated). */
    VMMCIFault fault;
    bool back_valid;            /* time-backwards: back_ns is set */
    int64_t back_ns;            /* time-backwards: the previous sample */
    uint32_t raise_value;       /* last "raise" written */

    /* Interrupt storm (QEMU_CLOCK_VIRTUAL), stopped by reset. */
    QEMUTimer *storm_timer;
    char *storm;                /* the list as set, NULL = no storm */
    uint32_t *storm_cmds;
    unsigned storm_len;
    unsigned storm_pos;
    uint32_t storm_interval_us;
    uint32_t storm_count;

    /* Static properties ("features" is also writable at run time). */
    uint32_t features;
    uint32_t short_timeout_ms;
    uint32_t long_timeout_ms;
    uint32_t unmatched_read;
    /* Test-only: a device vmd never makes, for a transport's checks */
    bool bar_mmio;
    bool intx;
    bool time_probe;
    MemoryRegion probe_bar;
    uint32_t probe_lo;          /* low dword of t1 or t2, written first */
    int64_t probe_t1, probe_host;
    struct {
        int64_t t1, host, t2;
    } probes[VMMCI_PROBE_LOG];
    unsigned probe_count;

    /* Stop handling (M14). */
    bool stop_pending;
    bool reboot_action_overridden;
    RebootAction saved_reboot_action;
    Notifier shutdown_notifier;

    /* Observation. */
    bool verbose;
    char *last_request;
    const char *end_reason;
    uint32_t raise_count;
    uint32_t raise_cmd;
    int64_t raise_time_ns;
    VMMCIAck acks[VMMCI_ACK_HISTORY];
    unsigned ack_count;         /* total number of COMMAND writes */
    VMMCIAck status_writes[VMMCI_ACK_HISTORY];
    unsigned status_count;      /* total number of DEVICE_STATUS writes */
};

static int64_t vmmci_realtime_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * NANOSECONDS_PER_SECOND + ts.tv_nsec;
}

/* floor(a / b) for b > 0 */
static int64_t vmmci_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    if ((a % b) != 0 && a < 0) {
        q--;
    }
    return q;
}

/* ns * ppb / 1e9 without overflow for realistic inputs */
static int64_t vmmci_skew_of(int64_t ns, int64_t ppb)
{
    int64_t sec = ns / NANOSECONDS_PER_SECOND;
    int64_t rem = ns % NANOSECONDS_PER_SECOND;

    return sec * ppb + rem * ppb / NANOSECONDS_PER_SECOND;
}

/*
 * The host wall clock as the device reports it: g_get_real_time()
 * (CLOCK_REALTIME, microseconds, what vmd's gettimeofday() returns) plus
 * host-offset-ns plus the accumulated host-skew-ppb drift.
 */
static int64_t vmmci_host_ns_at(VMMCIState *s, int64_t real_ns)
{
    int64_t skew = s->skew_base_ns;

    if (s->skew_ppb) {
        skew += vmmci_skew_of(real_ns - s->skew_anchor_ns, s->skew_ppb);
    }
    return real_ns + s->host_offset_ns + skew;
}

static int64_t vmmci_host_ns(VMMCIState *s)
{
    return vmmci_host_ns_at(s, g_get_real_time() * SCALE_US);
}

/* ---- test-only time probe (BAR1) ---------------------------------------- */

static uint64_t vmmci_probe_read(void *opaque, hwaddr addr, unsigned size)
{
    return 0;
}

static void vmmci_probe_write(void *opaque, hwaddr addr, uint64_t val,
                              unsigned size)
{
    VMMCIState *s = opaque;
    int64_t t = (int64_t)((uint64_t)val << 32 | s->probe_lo);

    switch (addr) {
    case 0:
    case 8:
        s->probe_lo = val;
        break;
    case 4:
        s->probe_host = vmmci_host_ns_at(s, vmmci_realtime_ns());
        s->probe_t1 = t;
        break;
    case 12:
        s->probes[s->probe_count % VMMCI_PROBE_LOG].t1 = s->probe_t1;
        s->probes[s->probe_count % VMMCI_PROBE_LOG].host = s->probe_host;
        s->probes[s->probe_count % VMMCI_PROBE_LOG].t2 = t;
        s->probe_count++;
        break;
    }
}

static const MemoryRegionOps vmmci_probe_ops = {
    .read = vmmci_probe_read,
    .write = vmmci_probe_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 4,
        .max_access_size = 4,
    },
};

static char *vmmci_get_probe_log(Object *obj, Error **errp)
{
    VMMCIState *s = VMMCI(obj);
    GString *str = g_string_new("");
    unsigned n = MIN(s->probe_count, VMMCI_PROBE_LOG);
    unsigned i;

    for (i = s->probe_count - n; i != s->probe_count; i++) {
        g_string_append_printf(str, "%s%" PRId64 ":%" PRId64 ":%" PRId64,
                               str->len ? "," : "",
                               s->probes[i % VMMCI_PROBE_LOG].t1,
                               s->probes[i % VMMCI_PROBE_LOG].host,
                               s->probes[i % VMMCI_PROBE_LOG].t2);
    }
    return g_string_free(str, false);
}

static void vmmci_set_probe_log(Object *obj, const char *value, Error **errp)
{
    VMMCI(obj)->probe_count = 0;
}

static void G_GNUC_PRINTF(2, 3) vmmci_verbose(VMMCIState *s,
                                              const char *fmt, ...)
{
    va_list ap;

    if (!s->verbose) {
        return;
    }
    va_start(ap, fmt);
    fprintf(stderr, "vmmci: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

static void vmmci_end_vm(VMMCIState *s, const char *reason,
                         ShutdownCause cause, const char *details)
{
    if (!s->end_reason) {
        s->end_reason = reason;
    }
    fprintf(stderr, "vmmci: end-reason=%s: %s (command=%u, status=0x%02x)\n",
            reason, details, s->cmd, s->status);
    fflush(stderr);
    qemu_system_shutdown_request(cause);
}

/* ---- command timer ------------------------------------------------------ */

static void vmmci_arm_timer(VMMCIState *s, uint32_t ms, const char *why)
{
    timer_mod(s->cmd_timer,
              qemu_clock_get_ns(QEMU_CLOCK_REALTIME) + (int64_t)ms * SCALE_MS);
    vmmci_verbose(s, "timer armed: %u ms (%s)", ms, why);
}

static void vmmci_cmd_timeout(void *opaque)
{
    VMMCIState *s = opaque;
    char details[96];

    /*
     * vmd: vm_shutdown(cmd == REBOOT ? REBOOT : SHUTDOWN) -- bookkeeping
     * only, the VM process exits and is not restarted: a power-off.
     */
    snprintf(details, sizeof(details),
             "command timer expired, powering off (vmd would report %s)",
             s->cmd == VMMCI_REBOOT ? "reboot" : "shutdown");
    vmmci_end_vm(s, "timer-expired", SHUTDOWN_CAUSE_GUEST_SHUTDOWN, details);
}

static int64_t vmmci_timer_remaining_ns(VMMCIState *s)
{
    int64_t left;

    if (!timer_pending(s->cmd_timer)) {
        return -1;
    }
    left = timer_expire_time_ns(s->cmd_timer) -
           qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    return left < 0 ? 0 : left;
}

/* ---- stop pending / reboot policy (M14) --------------------------------- */

static void vmmci_set_stop_pending(VMMCIState *s)
{
    s->stop_pending = true;
    if (!s->reboot_action_overridden) {
        s->saved_reboot_action = reboot_action;
        s->reboot_action_overridden = true;
        reboot_action = REBOOT_ACTION_SHUTDOWN;
    }
}

static void vmmci_clear_stop_pending(VMMCIState *s)
{
    s->stop_pending = false;
    if (s->reboot_action_overridden) {
        reboot_action = s->saved_reboot_action;
        s->reboot_action_overridden = false;
    }
}

static void vmmci_shutdown_notify(Notifier *n, void *data)
{
    VMMCIState *s = container_of(n, VMMCIState, shutdown_notifier);
    ShutdownCause cause = *(ShutdownCause *)data;

    /* The VM is over (or parked by -no-shutdown): no late timer expiry. */
    timer_del(s->cmd_timer);
    if (s->stop_pending && !s->end_reason &&
        (cause == SHUTDOWN_CAUSE_GUEST_RESET ||
         cause == SHUTDOWN_CAUSE_HOST_QMP_SYSTEM_RESET)) {
        s->end_reason = "reset-after-stop";
        fprintf(stderr, "vmmci: end-reason=reset-after-stop: %s while a stop "
                "was pending, powering off instead of rebooting "
                "(command=%u, status=0x%02x)\n",
                cause == SHUTDOWN_CAUSE_GUEST_RESET ? "guest reset" :
                "QMP system_reset", s->cmd, s->status);
        fflush(stderr);
    }
}

/* ---- host -> guest (vmd vmmci_ctl) -------------------------------------- */

/* INTx, if the device has an interrupt pin (property "intx") */
static void vmmci_set_irq(VMMCIState *s, int level)
{
    if (s->intx) {
        pci_set_irq(PCI_DEVICE(s), level);
    }
}

static void vmmci_raise_quiet(VMMCIState *s)
{
    /*
     * vmd asserts the line on every raise, and its i8259 latches a request
     * on every assert (i8259_assert_irq sets IRR, with no edge detection):
     * a raise while ISR is still set interrupts again.  QEMU's interrupt
     * controllers see only changes of the line, so lower it first.
     */
    if (s->isr) {
        vmmci_set_irq(s, 0);
    }
    s->isr = VMMCI_ISR_CONFIG_CHANGE;
    vmmci_set_irq(s, 1);
    s->raise_count++;
    s->raise_cmd = s->cmd;
    s->raise_time_ns = vmmci_realtime_ns();
}

static void vmmci_raise(VMMCIState *s)
{
    vmmci_raise_quiet(s);
    vmmci_verbose(s, "raised command %u (ISR=2, INTx up)", s->cmd);
}

/* Returns false when DRIVER_OK is clear (vmd returns -1). */
static bool vmmci_ctl(VMMCIState *s, uint32_t cmd)
{
    if (!(s->status & VMMCI_STATUS_DRIVER_OK)) {
        return false;
    }
    if (cmd == s->cmd) {
        vmmci_verbose(s, "request %u suppressed (same as current)", cmd);
        return true;
    }
    switch (cmd) {
    case VMMCI_SHUTDOWN:
    case VMMCI_REBOOT:
        s->cmd = cmd;
        vmmci_raise(s);
        vmmci_arm_timer(s, s->short_timeout_ms, "host request");
        break;
    case VMMCI_SYNCRTC:
        if (s->guest_features & VMMCI_F_SYNCRTC) {
            s->cmd = cmd;
            vmmci_raise(s);
        } else {
            vmmci_verbose(s, "SYNCRTC skipped (guest lacks feature bit 2)");
        }
        break;
    default:
        break;
    }
    return true;
}

/* ---- guest -> host (vmd vmmci_ack) -------------------------------------- */

static void vmmci_log_write(VMMCIAck *log, unsigned *count, uint32_t v)
{
    VMMCIAck *a = &log[*count % VMMCI_ACK_HISTORY];

    a->value = v;
    a->ns = vmmci_realtime_ns();
    (*count)++;
}

static void vmmci_ack(VMMCIState *s, uint32_t v)
{
    vmmci_log_write(s->acks, &s->ack_count, v);
    vmmci_verbose(s, "COMMAND write %u (command=%u)", v, s->cmd);

    switch (v) {
    case VMMCI_NONE:
        break;
    case VMMCI_SHUTDOWN:
        if (s->cmd == VMMCI_NONE) {
            /* Guest-initiated power-off notice. */
            vmmci_arm_timer(s, s->short_timeout_ms, "guest power-off notice");
            break;
        }
        /* fall through */
    case VMMCI_REBOOT:
        /* r1.127: every matching ack re-arms the long timer from now. */
        if (v == s->cmd) {
            vmmci_arm_timer(s, s->long_timeout_ms, "acknowledged");
        }
        break;
    case VMMCI_SYNCRTC:
        s->cmd = VMMCI_NONE;
        break;
    default:
        qemu_log_mask(LOG_GUEST_ERROR, "vmmci: illegal request %u\n", v);
        break;
    }
}

/* ---- TIME_* registers and their fault modes ----------------------------- */

/* The host time of one latch: the modelled host clock or time-backwards. */
static int64_t vmmci_sample_ns(VMMCIState *s)
{
    int64_t ns = vmmci_host_ns(s);

    if (s->fault == VMMCI_FAULT_TIME_STALE) {
        return ns - 5 * SCALE_MS;
    }
    if (s->fault != VMMCI_FAULT_TIME_BACKWARDS) {
        return ns;
    }
    s->back_ns = (s->back_valid ? s->back_ns : ns) - NANOSECONDS_PER_SECOND;
    s->back_valid = true;
    return s->back_ns;
}

static void vmmci_latch_random(VMMCIState *s)
{
    uint32_t r[4];

    qemu_guest_getrandom_nofail(r, sizeof(r));
    s->latch_sec = r[0];
    s->latch_sec_hi = r[1];
    s->latch_usec = r[2];
    s->latch_usec_hi = r[3];
}

/* Latch the host clock, microsecond resolution like gettimeofday. */
static void vmmci_latch(VMMCIState *s)
{
    int64_t ns, sec;

    if (s->fault == VMMCI_FAULT_TIME_RANDOM) {
        vmmci_latch_random(s);
        return;
    }
    ns = vmmci_sample_ns(s);
    sec = vmmci_floor_div(ns, NANOSECONDS_PER_SECOND);
    s->latch_sec = (uint32_t)sec;
    s->latch_usec = (ns - sec * NANOSECONDS_PER_SECOND) / SCALE_US;
    s->latch_sec_hi = 0;
    s->latch_usec_hi = 0;
}

static uint32_t vmmci_time_read(VMMCIState *s, hwaddr addr)
{
    switch (addr) {
    case VMMCI_REG_TIME_SEC_LO:
        vmmci_latch(s);
        return s->fault == VMMCI_FAULT_TIME_SEC_ZERO ? 0 : s->latch_sec;
    case VMMCI_REG_TIME_SEC_HI:
        if (s->fault == VMMCI_FAULT_TIME_SEC_HIGH) {
            return 1;
        }
        return s->fault == VMMCI_FAULT_TIME_RANDOM ? s->latch_sec_hi : 0;
    case VMMCI_REG_TIME_USEC_LO:
        if (s->fault == VMMCI_FAULT_TIME_USEC_INVALID) {
            return s->latch_usec + VMMCI_USEC_PER_SEC;
        }
        return s->latch_usec;
    default: /* VMMCI_REG_TIME_USEC_HI */
        return s->fault == VMMCI_FAULT_TIME_RANDOM ? s->latch_usec_hi : 0;
    }
}

/* ---- BAR0 --------------------------------------------------------------- */

static uint64_t vmmci_bar_read(void *opaque, hwaddr addr, unsigned size)
{
    VMMCIState *s = opaque;
    uint32_t val;

    switch (addr) {
    case VMMCI_REG_DEVICE_FEATURES:
        val = s->features;
        break;
    case VMMCI_REG_GUEST_FEATURES:
        val = s->guest_features;
        break;
    case VMMCI_REG_QUEUE_PFN:
        val = s->queue_pfn;
        break;
    case VMMCI_REG_QUEUE_SIZE:
        val = 0;
        break;
    case VMMCI_REG_QUEUE_SELECT:
        val = s->queue_select;
        break;
    case VMMCI_REG_QUEUE_NOTIFY:
        val = s->queue_notify;
        break;
    case VMMCI_REG_DEVICE_STATUS:
        val = s->status;
        break;
    case VMMCI_REG_ISR:
        val = s->isr;
        s->isr = 0;
        vmmci_set_irq(s, 0);
        break;
    case VMMCI_REG_COMMAND:
        val = s->cmd;
        break;
    case VMMCI_REG_TIME_SEC_LO:
    case VMMCI_REG_TIME_SEC_HI:
    case VMMCI_REG_TIME_USEC_LO:
    case VMMCI_REG_TIME_USEC_HI:
        val = vmmci_time_read(s, addr);
        break;
    default:
        val = s->unmatched_read;
        qemu_log_mask(LOG_GUEST_ERROR,
                      "vmmci: read of unmatched offset 0x%" HWADDR_PRIx
                      " (size %u) returns 0x%x\n", addr, size,
                      size == 4 ? val : val & ((1u << (size * 8)) - 1));
        break;
    }
    if (size < 4) {
        val &= (1u << (size * 8)) - 1;
    }
    return val;
}

static void vmmci_bar_write(void *opaque, hwaddr addr, uint64_t data,
                            unsigned size)
{
    VMMCIState *s = opaque;
    uint32_t val = data;

    switch (addr) {
    case VMMCI_REG_GUEST_FEATURES:
        if (size < 4) {
            qemu_log_mask(LOG_GUEST_ERROR,
                          "vmmci: %u-byte write 0x%x to GUEST_FEATURES "
                          "(zero-extended; vmd would use all of EAX)\n",
                          size, val);
        }
        s->guest_features = val;
        break;
    case VMMCI_REG_QUEUE_PFN:
        s->queue_pfn = val;
        break;
    case VMMCI_REG_QUEUE_SELECT:
        s->queue_select = val;
        break;
    case VMMCI_REG_QUEUE_NOTIFY:
        s->queue_notify = val;
        break;
    case VMMCI_REG_DEVICE_STATUS:
        s->status = val;
        vmmci_log_write(s->status_writes, &s->status_count, val);
        break;
    case VMMCI_REG_COMMAND:
        if (size < 4) {
            qemu_log_mask(LOG_GUEST_ERROR,
                          "vmmci: %u-byte write 0x%x to COMMAND "
                          "(zero-extended; vmd would use all of EAX)\n",
                          size, val);
        }
        vmmci_ack(s, val);
        break;
    case VMMCI_REG_DEVICE_FEATURES:
    case VMMCI_REG_QUEUE_SIZE:
    case VMMCI_REG_ISR:
        qemu_log_mask(LOG_GUEST_ERROR,
                      "vmmci: illegal write 0x%x to offset %" HWADDR_PRIu
                      "\n", val, addr);
        break;
    case VMMCI_REG_TIME_SEC_LO:
    case VMMCI_REG_TIME_SEC_HI:
    case VMMCI_REG_TIME_USEC_LO:
    case VMMCI_REG_TIME_USEC_HI:
        /* ignored silently, as in vmd */
        break;
    default:
        qemu_log_mask(LOG_GUEST_ERROR,
                      "vmmci: write 0x%x to unmatched offset 0x%"
                      HWADDR_PRIx " (size %u) ignored\n", val, addr, size);
        break;
    }
}

static const MemoryRegionOps vmmci_bar_ops = {
    .read = vmmci_bar_read,
    .write = vmmci_bar_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    /*
     * Decode by exact start offset, any width 1..4, any alignment: never let
     * the memory core split or widen an access.
     */
    .valid = {
        .min_access_size = 1,
        .max_access_size = 4,
        .unaligned = true,
    },
    .impl = {
        .min_access_size = 1,
        .max_access_size = 4,
        .unaligned = true,
    },
};

/* ---- SYNCRTC auto trigger (M16) ----------------------------------------- */

static void vmmci_tick_arm(VMMCIState *s)
{
    timer_mod(s->tick_timer,
              qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) + VMMCI_TICK_NS);
}

static void vmmci_tick(void *opaque)
{
    VMMCIState *s = opaque;
    int64_t now = vmmci_host_ns(s);
    int64_t old = s->tick_prev_ns;
    int64_t d;

    s->tick_prev_ns = now;
    /* vmd compares whole seconds: time(&now); if (now - old > 5) */
    d = vmmci_floor_div(now, NANOSECONDS_PER_SECOND) -
        vmmci_floor_div(old, NANOSECONDS_PER_SECOND);
    if (d > VMMCI_SYNC_DRIFT_S) {
        vmmci_verbose(s, "host clock advanced %" PRId64 " s since the last "
                      "tick, requesting SYNCRTC", d);
        if (!vmmci_ctl(s, VMMCI_SYNCRTC)) {
            vmmci_verbose(s, "SYNCRTC dropped (DRIVER_OK clear)");
        }
    }
    vmmci_tick_arm(s);
}

static void vmmci_tick_restart(VMMCIState *s)
{
    s->tick_prev_ns = vmmci_host_ns(s);
    if (s->auto_syncrtc) {
        vmmci_tick_arm(s);
    } else {
        timer_del(s->tick_timer);
    }
}

/* ---- hostile raises and interrupt storm (fault injection) --------------- */

/* "raise": no DRIVER_OK check, no suppression, no timer, no stop pending. */
static void vmmci_raw_raise(VMMCIState *s, uint32_t cmd)
{
    s->cmd = cmd;
    vmmci_raise(s);
}

static void vmmci_storm_arm(VMMCIState *s)
{
    timer_mod(s->storm_timer, qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) +
              (int64_t)s->storm_interval_us * SCALE_US);
}

static void vmmci_storm_tick(void *opaque)
{
    VMMCIState *s = opaque;

    s->cmd = s->storm_cmds[s->storm_pos];
    s->storm_pos = (s->storm_pos + 1) % s->storm_len;
    s->storm_count++;
    vmmci_raise_quiet(s);       /* no log line per raise */
    vmmci_storm_arm(s);
}

static void vmmci_storm_stop(VMMCIState *s)
{
    if (s->storm_timer) {
        timer_del(s->storm_timer);
    }
    if (s->storm) {
        vmmci_verbose(s, "storm '%s' stopped after %u raises", s->storm,
                      s->storm_count);
    }
    g_free(s->storm);
    s->storm = NULL;
    g_free(s->storm_cmds);
    s->storm_cmds = NULL;
    s->storm_len = 0;
    s->storm_pos = 0;
}

/* "3:7:0:42" -> {3, 7, 0, 42}; NULL and an error if malformed. */
static uint32_t *vmmci_storm_parse(const char *str, unsigned *len,
                                   Error **errp)
{
    g_auto(GStrv) tok = g_strsplit(str, ":", -1);
    unsigned n = g_strv_length(tok);
    g_autofree uint32_t *cmds = g_new(uint32_t, n);
    unsigned i, v;

    for (i = 0; i < n; i++) {
        if (!tok[i][0] || tok[i][strspn(tok[i], "0123456789")] ||
            qemu_strtoui(tok[i], NULL, 10, &v)) {
            error_setg(errp, "vmmci: invalid storm '%s' (expected decimal "
                       "32-bit command values separated by ':', e.g. "
                       "3:7:0:42, or \"\" to stop)", str);
            return NULL;
        }
        cmds[i] = v;
    }
    *len = n;
    return g_steal_pointer(&cmds);
}

static void vmmci_storm_start(VMMCIState *s, const char *str, uint32_t *cmds,
                              unsigned len)
{
    s->storm = g_strdup(str);
    s->storm_cmds = cmds;
    s->storm_len = len;
    s->storm_pos = 0;
    s->storm_count = 0;
    vmmci_storm_arm(s);
    vmmci_verbose(s, "storm '%s' every %u us", str, s->storm_interval_us);
}

/* ---- QOM properties ----------------------------------------------------- */

static bool vmmci_realized(VMMCIState *s)
{
    return DEVICE(s)->realized;
}

static char *vmmci_get_request(Object *obj, Error **errp)
{
    VMMCIState *s = VMMCI(obj);

    return g_strdup(s->last_request ? s->last_request : "");
}

static void vmmci_set_request(Object *obj, const char *value, Error **errp)
{
    VMMCIState *s = VMMCI(obj);
    uint32_t cmd;

    if (!vmmci_realized(s)) {
        error_setg(errp, "vmmci: 'request' can only be set on a realized "
                   "device");
        return;
    }
    if (!strcmp(value, "stop")) {
        cmd = VMMCI_REBOOT;
    } else if (!strcmp(value, "shutdown")) {
        cmd = VMMCI_SHUTDOWN;
    } else if (!strcmp(value, "reboot")) {
        cmd = VMMCI_REBOOT;
    } else if (!strcmp(value, "syncrtc")) {
        cmd = VMMCI_SYNCRTC;
    } else {
        error_setg(errp, "vmmci: invalid request '%s' (expected stop, "
                   "shutdown, reboot or syncrtc)", value);
        return;
    }

    vmmci_verbose(s, "host request '%s'", value);
    if (!strcmp(value, "stop")) {
        /* vmm.c: a stop while the VM is shutting down is not forwarded. */
        if (s->stop_pending) {
            vmmci_verbose(s, "stop already pending, not forwarded");
            return;
        }
        g_free(s->last_request);
        s->last_request = g_strdup(value);
        vmmci_set_stop_pending(s);
        if (!vmmci_ctl(s, cmd)) {
            vmmci_end_vm(s, "stop-without-driver",
                         SHUTDOWN_CAUSE_HOST_QMP_QUIT,
                         "stop requested while DRIVER_OK is clear, "
                         "powering off immediately");
        }
        return;
    }

    if (!(s->status & VMMCI_STATUS_DRIVER_OK)) {
        error_setg(errp, "vmmci: request '%s' refused: DRIVER_OK is not set "
                   "(device status 0x%02x)", value, s->status);
        return;
    }
    g_free(s->last_request);
    s->last_request = g_strdup(value);
    if (cmd != VMMCI_SYNCRTC) {
        vmmci_set_stop_pending(s);
    }
    vmmci_ctl(s, cmd);
}

static bool vmmci_get_auto_syncrtc(Object *obj, Error **errp)
{
    return VMMCI(obj)->auto_syncrtc;
}

static void vmmci_set_auto_syncrtc(Object *obj, bool value, Error **errp)
{
    VMMCIState *s = VMMCI(obj);

    s->auto_syncrtc = value;
    if (vmmci_realized(s)) {
        vmmci_tick_restart(s);
    }
}

static bool vmmci_get_verbose(Object *obj, Error **errp)
{
    return VMMCI(obj)->verbose;
}

static void vmmci_set_verbose(Object *obj, bool value, Error **errp)
{
    VMMCI(obj)->verbose = value;
}

static char *vmmci_get_fault(Object *obj, Error **errp)
{
    return g_strdup(vmmci_fault_names[VMMCI(obj)->fault]);
}

static void vmmci_set_fault(Object *obj, const char *value, Error **errp)
{
    VMMCIState *s = VMMCI(obj);
    int i;

    for (i = 0; i < VMMCI_FAULT__MAX; i++) {
        if (!strcmp(value, vmmci_fault_names[i])) {
            break;
        }
    }
    if (i == VMMCI_FAULT__MAX) {
        error_setg(errp, "vmmci: invalid fault '%s' (expected none, "
                   "time-usec-invalid, time-sec-zero, time-sec-high, "
                   "time-backwards or time-random)", value);
        return;
    }
    vmmci_verbose(s, "fault %s -> %s", vmmci_fault_names[s->fault], value);
    s->fault = i;
    s->back_valid = false;      /* time-backwards starts from host time */
}

static void vmmci_set_raise(Object *obj, Visitor *v, const char *name,
                            void *opaque, Error **errp)
{
    VMMCIState *s = VMMCI(obj);
    uint32_t value;

    if (!visit_type_uint32(v, name, &value, errp)) {
        return;
    }
    if (!vmmci_realized(s)) {
        error_setg(errp, "vmmci: 'raise' can only be set on a realized "
                   "device");
        return;
    }
    s->raise_value = value;
    vmmci_verbose(s, "raw raise %u (no checks)", value);
    vmmci_raw_raise(s, value);
}

static char *vmmci_get_storm(Object *obj, Error **errp)
{
    VMMCIState *s = VMMCI(obj);

    return g_strdup(s->storm ? s->storm : "");
}

static void vmmci_set_storm(Object *obj, const char *value, Error **errp)
{
    VMMCIState *s = VMMCI(obj);
    uint32_t *cmds = NULL;
    unsigned len = 0;

    if (!vmmci_realized(s)) {
        error_setg(errp, "vmmci: 'storm' can only be set on a realized "
                   "device");
        return;
    }
    if (*value) {
        cmds = vmmci_storm_parse(value, &len, errp);
        if (!cmds) {
            return;
        }
    }
    vmmci_storm_stop(s);
    if (len) {
        vmmci_storm_start(s, value, cmds, len);
    }
}

static void vmmci_set_storm_interval_us(Object *obj, Visitor *v,
                                        const char *name, void *opaque,
                                        Error **errp)
{
    VMMCIState *s = VMMCI(obj);
    uint32_t value;

    if (!visit_type_uint32(v, name, &value, errp)) {
        return;
    }
    if (value < VMMCI_STORM_INTERVAL_US_MIN) {
        error_setg(errp, "vmmci: storm-interval-us must be >= %u",
                   VMMCI_STORM_INTERVAL_US_MIN);
        return;
    }
    s->storm_interval_us = value;
    if (s->storm) {
        vmmci_storm_arm(s);     /* the new interval counts from now */
    }
}

static void vmmci_set_status(Object *obj, Visitor *v, const char *name,
                             void *opaque, Error **errp)
{
    VMMCIState *s = VMMCI(obj);
    uint8_t value;

    if (!visit_type_uint8(v, name, &value, errp)) {
        return;
    }
    vmmci_verbose(s, "host sets DEVICE_STATUS 0x%02x -> 0x%02x", s->status,
                  value);
    s->status = value;
}

static bool vmmci_get_driver_ok(Object *obj, Error **errp)
{
    return VMMCI(obj)->status & VMMCI_STATUS_DRIVER_OK;
}

static bool vmmci_get_stop_pending(Object *obj, Error **errp)
{
    return VMMCI(obj)->stop_pending;
}

static char *vmmci_get_end_reason(Object *obj, Error **errp)
{
    VMMCIState *s = VMMCI(obj);

    return g_strdup(s->end_reason ? s->end_reason : "");
}

static char *vmmci_format_log(const VMMCIAck *log, unsigned count)
{
    GString *str = g_string_new("");
    unsigned n = MIN(count, VMMCI_ACK_HISTORY);
    unsigned i;

    for (i = count - n; i != count; i++) {
        const VMMCIAck *a = &log[i % VMMCI_ACK_HISTORY];

        g_string_append_printf(str, "%s%u:%" PRId64, str->len ? "," : "",
                               a->value, a->ns);
    }
    return g_string_free(str, false);
}

static char *vmmci_get_acks(Object *obj, Error **errp)
{
    VMMCIState *s = VMMCI(obj);

    return vmmci_format_log(s->acks, s->ack_count);
}

static char *vmmci_get_status_log(Object *obj, Error **errp)
{
    VMMCIState *s = VMMCI(obj);

    return vmmci_format_log(s->status_writes, s->status_count);
}

/* uint32 fields, read-only; opaque = offset into VMMCIState */
static void vmmci_get_u32_field(Object *obj, Visitor *v, const char *name,
                                void *opaque, Error **errp)
{
    uint32_t value = *(uint32_t *)((char *)obj + (uintptr_t)opaque);

    visit_type_uint32(v, name, &value, errp);
}

static void vmmci_get_u8_field(Object *obj, Visitor *v, const char *name,
                               void *opaque, Error **errp)
{
    uint8_t value = *(uint8_t *)((char *)obj + (uintptr_t)opaque);

    visit_type_uint8(v, name, &value, errp);
}

static void vmmci_get_i64_field(Object *obj, Visitor *v, const char *name,
                                void *opaque, Error **errp)
{
    int64_t value = *(int64_t *)((char *)obj + (uintptr_t)opaque);

    visit_type_int64(v, name, &value, errp);
}

static void vmmci_get_last_ack_value(Object *obj, Visitor *v,
                                     const char *name, void *opaque,
                                     Error **errp)
{
    VMMCIState *s = VMMCI(obj);
    int64_t value = -1;

    if (s->ack_count) {
        value = s->acks[(s->ack_count - 1) % VMMCI_ACK_HISTORY].value;
    }
    visit_type_int64(v, name, &value, errp);
}

static void vmmci_get_last_ack_ns(Object *obj, Visitor *v, const char *name,
                                  void *opaque, Error **errp)
{
    VMMCIState *s = VMMCI(obj);
    int64_t value = 0;

    if (s->ack_count) {
        value = s->acks[(s->ack_count - 1) % VMMCI_ACK_HISTORY].ns;
    }
    visit_type_int64(v, name, &value, errp);
}

static void vmmci_get_timer_armed_ms(Object *obj, Visitor *v,
                                     const char *name, void *opaque,
                                     Error **errp)
{
    VMMCIState *s = VMMCI(obj);
    int64_t value = -1;

    if (vmmci_realized(s)) {
        int64_t left = vmmci_timer_remaining_ns(s);

        value = left < 0 ? -1 : DIV_ROUND_UP(left, SCALE_MS);
    }
    visit_type_int64(v, name, &value, errp);
}

static void vmmci_get_host_time_ns(Object *obj, Visitor *v, const char *name,
                                   void *opaque, Error **errp)
{
    int64_t value = vmmci_host_ns(VMMCI(obj));

    visit_type_int64(v, name, &value, errp);
}

static void vmmci_set_host_offset_ns(Object *obj, Visitor *v,
                                     const char *name, void *opaque,
                                     Error **errp)
{
    VMMCIState *s = VMMCI(obj);
    int64_t value;

    if (!visit_type_int64(v, name, &value, errp)) {
        return;
    }
    vmmci_verbose(s, "host-offset-ns %" PRId64 " -> %" PRId64,
                  s->host_offset_ns, value);
    s->host_offset_ns = value;
}

static void vmmci_set_host_skew_ppb(Object *obj, Visitor *v,
                                    const char *name, void *opaque,
                                    Error **errp)
{
    VMMCIState *s = VMMCI(obj);
    int64_t value, now;

    if (!visit_type_int64(v, name, &value, errp)) {
        return;
    }
    if (value <= -NANOSECONDS_PER_SECOND || value > NANOSECONDS_PER_SECOND) {
        error_setg(errp, "vmmci: host-skew-ppb must be in (-1e9, 1e9]");
        return;
    }
    /* Fold the drift so far into the base: no jump at the change. */
    now = g_get_real_time() * SCALE_US;
    s->skew_base_ns = vmmci_host_ns_at(s, now) - now - s->host_offset_ns;
    s->skew_anchor_ns = now;
    s->skew_ppb = value;
    vmmci_verbose(s, "host-skew-ppb -> %" PRId64, value);
}

#define VMMCI_OFS(field) ((void *)(uintptr_t)offsetof(VMMCIState, field))

static void vmmci_add_ro(ObjectClass *oc, const char *name, const char *type,
                         ObjectPropertyAccessor *get, void *opaque,
                         const char *desc)
{
    object_class_property_add(oc, name, type, get, NULL, NULL, opaque);
    object_class_property_set_description(oc, name, desc);
}

/* Fault injection: a hostile or faulty host. */
static void vmmci_class_add_fault_properties(ObjectClass *oc)
{
    object_class_property_add_str(oc, "fault", vmmci_get_fault,
                                  vmmci_set_fault);
    object_class_property_set_description(oc, "fault",
        "what the TIME registers return: none, time-usec-invalid, "
        "time-sec-zero, time-sec-high, time-backwards, time-random");
    object_class_property_add(oc, "raise", "uint32", vmmci_get_u32_field,
                              vmmci_set_raise, NULL, VMMCI_OFS(raise_value));
    object_class_property_set_description(oc, "raise",
        "write v: COMMAND := v, ISR := 2, INTx up, with no checks at all; "
        "reads the last value written");
    object_class_property_add_str(oc, "storm", vmmci_get_storm,
                                  vmmci_set_storm);
    object_class_property_set_description(oc, "storm",
        "colon-separated command values raised in rotation every "
        "storm-interval-us (QEMU_CLOCK_VIRTUAL); '' stops");
    object_class_property_add(oc, "storm-interval-us", "uint32",
                              vmmci_get_u32_field,
                              vmmci_set_storm_interval_us, NULL,
                              VMMCI_OFS(storm_interval_us));
    object_class_property_set_description(oc, "storm-interval-us",
        "interval of the storm raises, us (default 1000, minimum 100)");
    vmmci_add_ro(oc, "storm-count", "uint32", vmmci_get_u32_field,
                 VMMCI_OFS(storm_count),
                 "raises done by the storm since it was last started "
                 "(read-only)");
}

static void vmmci_class_add_properties(ObjectClass *oc)
{
    object_class_property_add_str(oc, "request", vmmci_get_request,
                                  vmmci_set_request);
    object_class_property_set_description(oc, "request",
        "write stop|shutdown|reboot|syncrtc to raise a host request "
        "(stop = vmctl stop); reads the last accepted request");

    object_class_property_add(oc, "host-offset-ns", "int",
                              vmmci_get_i64_field, vmmci_set_host_offset_ns,
                              NULL, VMMCI_OFS(host_offset_ns));
    object_class_property_set_description(oc, "host-offset-ns",
        "offset (ns) added to the host clock reported to the guest");
    object_class_property_add(oc, "host-skew-ppb", "int",
                              vmmci_get_i64_field, vmmci_set_host_skew_ppb,
                              NULL, VMMCI_OFS(skew_ppb));
    object_class_property_set_description(oc, "host-skew-ppb",
        "rate skew (ppb) of the reported host clock, from now on");
    object_class_property_add_bool(oc, "auto-syncrtc",
                                   vmmci_get_auto_syncrtc,
                                   vmmci_set_auto_syncrtc);
    object_class_property_set_description(oc, "auto-syncrtc",
        "raise SYNCRTC when the host clock advanced > 5 s between 1 s "
        "ticks (default on)");
    object_class_property_add_bool(oc, "verbose", vmmci_get_verbose,
                                   vmmci_set_verbose);
    object_class_property_set_description(oc, "verbose",
        "log requests, raises, acks and timer events to stderr");
    vmmci_class_add_fault_properties(oc);

    vmmci_add_ro(oc, "command", "uint32", vmmci_get_u32_field,
                 VMMCI_OFS(cmd), "current COMMAND slot (read-only)");
    vmmci_add_ro(oc, "guest-features", "uint32", vmmci_get_u32_field,
                 VMMCI_OFS(guest_features), "GUEST_FEATURES (read-only)");
    object_class_property_add(oc, "status", "uint8", vmmci_get_u8_field,
                              vmmci_set_status, NULL, VMMCI_OFS(status));
    object_class_property_set_description(oc, "status",
        "DEVICE_STATUS; a write models the host changing it (e.g. 0 "
        "clears DRIVER_OK)");
    vmmci_add_ro(oc, "isr", "uint8", vmmci_get_u8_field,
                 VMMCI_OFS(isr), "ISR = INTx level (read-only)");
    object_class_property_add_bool(oc, "driver-ok", vmmci_get_driver_ok,
                                   NULL);
    object_class_property_set_description(oc, "driver-ok",
        "DEVICE_STATUS has DRIVER_OK (read-only)");
    object_class_property_add_bool(oc, "stop-pending", vmmci_get_stop_pending,
                                   NULL);
    object_class_property_set_description(oc, "stop-pending",
        "a stop/shutdown/reboot request was raised: a guest reset powers "
        "the VM off (read-only)");
    vmmci_add_ro(oc, "raise-count", "uint32", vmmci_get_u32_field,
                 VMMCI_OFS(raise_count),
                 "number of interrupts raised (read-only)");
    vmmci_add_ro(oc, "raise-cmd", "uint32", vmmci_get_u32_field,
                 VMMCI_OFS(raise_cmd),
                 "command of the last raise (read-only)");
    vmmci_add_ro(oc, "raise-time-ns", "int", vmmci_get_i64_field,
                 VMMCI_OFS(raise_time_ns),
                 "host CLOCK_REALTIME ns of the last raise, 0 if none "
                 "(read-only)");
    vmmci_add_ro(oc, "last-ack-ns", "int", vmmci_get_last_ack_ns, NULL,
                 "host CLOCK_REALTIME ns of the last COMMAND write, 0 if "
                 "none (read-only)");
    vmmci_add_ro(oc, "last-ack-value", "int", vmmci_get_last_ack_value, NULL,
                 "value of the last COMMAND write, -1 if none (read-only)");
    object_class_property_add_str(oc, "acks", vmmci_get_acks, NULL);
    object_class_property_set_description(oc, "acks",
        "last 16 COMMAND writes as value:ns,... oldest first (read-only)");
    object_class_property_add_str(oc, "status-log", vmmci_get_status_log,
                                  NULL);
    object_class_property_set_description(oc, "status-log",
        "last 16 DEVICE_STATUS writes as value:ns,... oldest first "
        "(read-only)");
    object_class_property_add_str(oc, "end-reason", vmmci_get_end_reason,
                                  NULL);
    object_class_property_set_description(oc, "end-reason",
        "why the device ended the VM: '', stop-without-driver, "
        "timer-expired, reset-after-stop (read-only)");
    vmmci_add_ro(oc, "timer-armed-ms", "int", vmmci_get_timer_armed_ms, NULL,
                 "remaining ms of the command timer, -1 if idle "
                 "(read-only)");
    vmmci_add_ro(oc, "host-time-ns", "int", vmmci_get_host_time_ns, NULL,
                 "modelled host wall clock now, ns (read-only)");
    object_class_property_add_str(oc, "time-probe-log", vmmci_get_probe_log,
                                  vmmci_set_probe_log);
    object_class_property_set_description(oc, "time-probe-log",
        "time-probe=on: last 64 samples t1:host:t2,... (write: empty it)");
}

/* ---- lifecycle ---------------------------------------------------------- */

static void vmmci_reset(DeviceState *dev)
{
    VMMCIState *s = VMMCI(dev);

    s->guest_features = 0;
    s->queue_pfn = 0;
    s->queue_select = 0;
    s->queue_notify = 0;
    s->status = 0;
    s->isr = 0;
    s->cmd = VMMCI_NONE;
    s->latch_sec = 0;
    s->latch_usec = 0;
    s->latch_sec_hi = 0;
    s->latch_usec_hi = 0;
    vmmci_storm_stop(s);
    vmmci_set_irq(s, 0);
    timer_del(s->cmd_timer);
    vmmci_clear_stop_pending(s);
    vmmci_tick_restart(s);
}

static void vmmci_realize(PCIDevice *pdev, Error **errp)
{
    VMMCIState *s = VMMCI(pdev);

    pdev->config[PCI_INTERRUPT_PIN] = s->intx ? 1 : 0; /* INTA# */

    memory_region_init_io(&s->bar, OBJECT(s), &vmmci_bar_ops, s,
                          "vmmci-bar0", VMMCI_BAR_SIZE);
    pci_register_bar(pdev, 0, s->bar_mmio ? PCI_BASE_ADDRESS_SPACE_MEMORY
                                          : PCI_BASE_ADDRESS_SPACE_IO,
                     &s->bar);
    if (s->time_probe) {
        memory_region_init_io(&s->probe_bar, OBJECT(s), &vmmci_probe_ops, s,
                              "vmmci-time-probe", VMMCI_PROBE_BAR_SIZE);
        pci_register_bar(pdev, 1, PCI_BASE_ADDRESS_SPACE_IO, &s->probe_bar);
    }

    s->cmd_timer = timer_new_ns(QEMU_CLOCK_REALTIME, vmmci_cmd_timeout, s);
    s->tick_timer = timer_new_ns(QEMU_CLOCK_VIRTUAL, vmmci_tick, s);
    s->storm_timer = timer_new_ns(QEMU_CLOCK_VIRTUAL, vmmci_storm_tick, s);
    s->shutdown_notifier.notify = vmmci_shutdown_notify;
    qemu_register_shutdown_notifier(&s->shutdown_notifier);
    vmmci_tick_restart(s);
}

static void vmmci_exit(PCIDevice *pdev)
{
    VMMCIState *s = VMMCI(pdev);

    vmmci_clear_stop_pending(s);
    notifier_remove(&s->shutdown_notifier);
    timer_free(s->cmd_timer);
    s->cmd_timer = NULL;
    timer_free(s->tick_timer);
    s->tick_timer = NULL;
    vmmci_storm_stop(s);
    timer_free(s->storm_timer);
    s->storm_timer = NULL;
}

static void vmmci_instance_init(Object *obj)
{
    VMMCIState *s = VMMCI(obj);

    s->auto_syncrtc = true;
    s->storm_interval_us = VMMCI_STORM_INTERVAL_US_DEFAULT;
    s->skew_anchor_ns = g_get_real_time() * SCALE_US;
}

static void vmmci_instance_finalize(Object *obj)
{
    VMMCIState *s = VMMCI(obj);

    g_free(s->last_request);
    g_free(s->storm);
    g_free(s->storm_cmds);
}

/* ---- migration (M19) ---------------------------------------------------- */

static int vmmci_pre_save(void *opaque)
{
    VMMCIState *s = opaque;

    s->timer_remaining_ns = vmmci_timer_remaining_ns(s);
    return 0;
}

static int vmmci_post_load(void *opaque, int version_id)
{
    VMMCIState *s = opaque;
    bool pending = s->stop_pending;

    if (s->timer_remaining_ns >= 0) {
        timer_mod(s->cmd_timer, qemu_clock_get_ns(QEMU_CLOCK_REALTIME) +
                  s->timer_remaining_ns);
    } else {
        timer_del(s->cmd_timer);
    }
    vmmci_clear_stop_pending(s);
    if (pending) {
        vmmci_set_stop_pending(s);
    }
    /*
     * Keep the migrated tick_prev_ns: like vmd after receive, a long
     * migration downtime triggers SYNCRTC on the next tick.
     */
    if (s->auto_syncrtc) {
        vmmci_tick_arm(s);
    }
    return 0;
}

static const VMStateDescription vmstate_vmmci = {
    .name = TYPE_VMMCI,
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_save = vmmci_pre_save,
    .post_load = vmmci_post_load,
    .fields = (VMStateField[]) {
        VMSTATE_PCI_DEVICE(parent_obj, VMMCIState), /* incl. INTx level */
        VMSTATE_UINT32(guest_features, VMMCIState),
        VMSTATE_UINT32(queue_pfn, VMMCIState),
        VMSTATE_UINT16(queue_select, VMMCIState),
        VMSTATE_UINT16(queue_notify, VMMCIState),
        VMSTATE_UINT8(status, VMMCIState),
        VMSTATE_UINT8(isr, VMMCIState),
        VMSTATE_UINT32(cmd, VMMCIState),
        VMSTATE_UINT32(latch_sec, VMMCIState),
        VMSTATE_UINT32(latch_usec, VMMCIState),
        VMSTATE_INT64(timer_remaining_ns, VMMCIState),
        VMSTATE_BOOL(stop_pending, VMMCIState),
        VMSTATE_INT64(tick_prev_ns, VMMCIState),
        VMSTATE_END_OF_LIST()
    }
};

/*
 * "features" is a qdev uint32 property that may also be set after realize
 * (feature bits withdrawn by the host at run time).
 */
static void vmmci_prop_get_features(Object *obj, Visitor *v, const char *name,
                                    void *opaque, Error **errp)
{
    qdev_prop_uint32.get(obj, v, name, opaque, errp);
}

static void vmmci_prop_set_features(Object *obj, Visitor *v, const char *name,
                                    void *opaque, Error **errp)
{
    VMMCIState *s = VMMCI(obj);
    uint32_t old = s->features;

    qdev_prop_uint32.set(obj, v, name, opaque, errp);
    if (s->features != old) {
        vmmci_verbose(s, "features 0x%x -> 0x%x", old, s->features);
    }
}

static void vmmci_prop_features_default(ObjectProperty *op,
                                        const Property *prop)
{
    qdev_prop_uint32.set_default_value(op, prop);
}

static const PropertyInfo vmmci_prop_features = {
#if VMMCI_QEMU_VERSION >= 1000          /* PropertyInfo.name renamed .type */
    .type = "uint32",
#else
    .name = "uint32",
#endif
    .realized_set_allowed = true,
    .get = vmmci_prop_get_features,
    .set = vmmci_prop_set_features,
    .set_default_value = vmmci_prop_features_default,
};

static VMMCI_PROPS_CONST Property vmmci_properties[] = {
    DEFINE_PROP_UNSIGNED("features", VMMCIState, features,
                         VMMCI_F_TIMESYNC | VMMCI_F_ACK | VMMCI_F_SYNCRTC,
                         vmmci_prop_features, uint32_t),
    DEFINE_PROP_UINT32("short-timeout-ms", VMMCIState, short_timeout_ms,
                       3000),
    DEFINE_PROP_UINT32("long-timeout-ms", VMMCIState, long_timeout_ms,
                       120000),
    DEFINE_PROP_UINT32("unmatched-read", VMMCIState, unmatched_read,
                       0xffffffff),
    DEFINE_PROP_BOOL("bar-mmio", VMMCIState, bar_mmio, false),
    DEFINE_PROP_BOOL("intx", VMMCIState, intx, true),
    DEFINE_PROP_BOOL("time-probe", VMMCIState, time_probe, false),
    VMMCI_PROPS_END
};

static void vmmci_class_init(ObjectClass *oc, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(oc);
    PCIDeviceClass *k = PCI_DEVICE_CLASS(oc);

    k->realize = vmmci_realize;
    k->exit = vmmci_exit;
    k->vendor_id = PCI_VENDOR_ID_OPENBSD;
    k->device_id = PCI_DEVICE_ID_OPENBSD_CONTROL;
    k->revision = 0;
    k->class_id = VMMCI_CLASS_COMMUNICATIONS_MISC;
    k->subsystem_vendor_id = PCI_VENDOR_ID_OPENBSD;
    k->subsystem_id = PCI_SUBSYSTEM_ID_VIRTIO_VMMCI;

    dc->desc = "OpenBSD vmd VMM control interface (vmmci)";
#if VMMCI_QEMU_VERSION >= 902           /* DeviceClass.reset -> legacy_reset */
    device_class_set_legacy_reset(dc, vmmci_reset);
#else
    dc->reset = vmmci_reset;
#endif
    dc->vmsd = &vmstate_vmmci;
    dc->hotpluggable = false;
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
    device_class_set_props(dc, vmmci_properties);
    object_class_property_set_description(oc, "features",
        "DEVICE_FEATURES offered to the guest (also writable at run "
        "time)");
    object_class_property_set_description(oc, "short-timeout-ms",
        "timeout after a host request or guest power-off notice, ms "
        "(creation only)");
    object_class_property_set_description(oc, "long-timeout-ms",
        "timeout after a matching SHUTDOWN/REBOOT ack, ms (creation only)");
    object_class_property_set_description(oc, "unmatched-read",
        "value read from unmatched offsets, truncated (creation only)");
    vmmci_class_add_properties(oc);
}

static const TypeInfo vmmci_info = {
    .name = TYPE_VMMCI,
    .parent = TYPE_PCI_DEVICE,
    .instance_size = sizeof(VMMCIState),
    .instance_init = vmmci_instance_init,
    .instance_finalize = vmmci_instance_finalize,
    .class_init = vmmci_class_init,
    .interfaces = (InterfaceInfo[]) {
        { INTERFACE_CONVENTIONAL_PCI_DEVICE },
        { },
    },
};

static void vmmci_register_types(void)
{
    type_register_static(&vmmci_info);
}

type_init(vmmci_register_types)
