/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The vmmci driver's device layout and state, shared with its KUnit tests.
 */

#ifndef _VIRTIO_VMMCI_H
#define _VIRTIO_VMMCI_H

#include <linux/mutex.h>
#include <linux/ptp_clock_kernel.h>
#include <linux/types.h>
#include <linux/workqueue.h>

struct virtio_device;

/*
 * Device config space.  vmd decodes only aligned 32-bit accesses; the
 * virtio_pci quirk for this device makes the transport use nothing else.
 * Reading the low dword of TIME_SEC latches the host clock; the other
 * dwords then return the rest of that sample, so it must be read first.
 */
#define VMMCI_CONFIG_COMMAND	0	/* u32: request, and its ack */
#define VMMCI_CONFIG_TIME_SEC	4	/* u64: host time, seconds */
#define VMMCI_CONFIG_TIME_USEC	12	/* u64: host time, microseconds */

/* Feature bits */
#define VMMCI_F_TIMESYNC	0	/* host time registers */
#define VMMCI_F_ACK		1	/* commands are acknowledged */
#define VMMCI_F_SYNCRTC		2	/* host sends SYNCRTC */

/* Commands */
#define VMMCI_NONE		0
#define VMMCI_SHUTDOWN		1
#define VMMCI_REBOOT		2
#define VMMCI_SYNCRTC		3

/* The driver's view of the COMMAND register */
struct vmmci_cmd_state {
	/* Last command acted on, to ignore the ones vmd leaves in place */
	u32 last_cmd;
	/* A host shutdown or reboot is under way */
	bool stopping;
};

struct vmmci {
	struct virtio_device *vdev;
	struct work_struct cmd_work;
	struct ptp_clock_info ptp_info;
	struct ptp_clock *ptp;		/* NULL without PTP support */
	/* Serialises config space access (the time latch) and the fields below */
	struct mutex lock;
	/* DRIVER_OK is set and the device not yet reset by us or the core */
	bool ready;
	struct vmmci_cmd_state cmd;
};
// @series-if kunit

#if IS_ENABLED(CONFIG_KUNIT)
struct sys_off_data;
struct timespec64;

void vmmci_cmd_work(struct work_struct *work);
int vmmci_power_off_prepare(struct sys_off_data *data);
int vmmci_ptp_gettimex(struct ptp_clock_info *info, struct timespec64 *ts,
		       struct ptp_system_timestamp *sts);
int vmmci_start(struct vmmci *vi);
void vmmci_stop(struct vmmci *vi, u32 cmd);
int vmmci_set_clock(const struct timespec64 *ts);
#endif
// @series-endif

#endif /* _VIRTIO_VMMCI_H */
