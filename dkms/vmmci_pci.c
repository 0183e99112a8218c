// SPDX-License-Identifier: GPL-2.0
/*
 * PCI transport of the VMM control interface (vmmci) of OpenBSD's vmd(8),
 * for the vmmci DKMS package.
 *
 * vmd's control device is a legacy (virtio 0.9) virtio device over an I/O
 * BAR, under OpenBSD's PCI ids rather than the virtio ones, with its virtio
 * device id in the PCI subsystem id.  It has no virtqueues and no MSI-X, so
 * its device config starts at BAR0 + 20, and its one interrupt is INTx,
 * deasserted by reading ISR.  It decodes each access to its config by the
 * exact start offset: only naturally aligned 32-bit accesses work there.
 *
 * A distribution kernel's virtio_pci neither binds these ids nor accesses
 * the config that way, and may be built in.  This module is a transport for
 * this one device only, so that the unmodified virtio_vmmci driver binds
 * to it through the virtio bus.  Upstream, a quirk of virtio_pci does the
 * same; this file is not part of that series.
 */

#include <linux/interrupt.h>
#include <linux/iopoll.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_pci.h>
#include <linux/virtio_ring.h>

#define VMMCI_PCI_VENDOR_OPENBSD	0x0b5d
#define VMMCI_PCI_DEVICE_VMMCI		0x0777
/* vmd's private virtio device id */
#define VMMCI_PCI_SUBDEVICE_VMMCI	0xffff

/* The device config, after the legacy header without MSI-X vectors */
#define VMMCI_PCI_CONFIG		VIRTIO_PCI_CONFIG_OFF(false)
/* The header and the 20 bytes of vmmci's config */
#define VMMCI_PCI_BAR_MIN		(VMMCI_PCI_CONFIG + 20)

/* How long the device may take to read back status 0 after a reset */
#define VMMCI_PCI_RESET_TIMEOUT_US	USEC_PER_SEC

struct vmmci_pci {
	struct virtio_device vdev;
	struct pci_dev *pdev;
	void __iomem *ioaddr;
	/* Bytes of BAR0 from the device config on */
	unsigned int config_len;
	/* The INTx handler is installed: from find_vqs() to del_vqs() */
	bool irq_requested;
};

static struct vmmci_pci *to_vmmci_pci(struct virtio_device *vdev)
{
	return container_of(vdev, struct vmmci_pci, vdev);
}

/*
 * Whole, naturally aligned dwords of the device config only.  The driver
 * accesses nothing else; anything else is a bug, warns once and does not
 * reach the device.
 */
static bool vmmci_pci_config_ok(struct vmmci_pci *vp, unsigned int offset,
				unsigned int len)
{
	return !WARN_ON_ONCE((offset | len) & 3 || len > vp->config_len ||
			     offset > vp->config_len - len);
}

/*
 * config->get(): 32-bit reads in ascending order, so that a 64-bit field
 * is read low dword first (reading the low dword of the host time latches
 * it).
 */
static void vmmci_pci_get(struct virtio_device *vdev, unsigned int offset,
			  void *buf, unsigned int len)
{
	struct vmmci_pci *vp = to_vmmci_pci(vdev);
	void __iomem *addr = vp->ioaddr + VMMCI_PCI_CONFIG + offset;
	u8 *ptr = buf;
	unsigned int i;
	u32 val;

	if (!vmmci_pci_config_ok(vp, offset, len)) {
		memset(buf, 0xff, len);
		return;
	}
	for (i = 0; i < len; i += 4) {
		val = ioread32(addr + i);
		memcpy(ptr + i, &val, sizeof(val));
	}
}

/* config->set(): 32-bit writes in ascending order */
static void vmmci_pci_set(struct virtio_device *vdev, unsigned int offset,
			  const void *buf, unsigned int len)
{
	struct vmmci_pci *vp = to_vmmci_pci(vdev);
	void __iomem *addr = vp->ioaddr + VMMCI_PCI_CONFIG + offset;
	const u8 *ptr = buf;
	unsigned int i;
	u32 val;

	if (!vmmci_pci_config_ok(vp, offset, len))
		return;
	for (i = 0; i < len; i += 4) {
		memcpy(&val, ptr + i, sizeof(val));
		iowrite32(val, addr + i);
	}
}

static u8 vmmci_pci_get_status(struct virtio_device *vdev)
{
	return ioread8(to_vmmci_pci(vdev)->ioaddr + VIRTIO_PCI_STATUS);
}

static void vmmci_pci_set_status(struct virtio_device *vdev, u8 status)
{
	iowrite8(status, to_vmmci_pci(vdev)->ioaddr + VIRTIO_PCI_STATUS);
}

static void vmmci_pci_synchronize_cbs(struct virtio_device *vdev)
{
	struct vmmci_pci *vp = to_vmmci_pci(vdev);

	if (vp->irq_requested)
		synchronize_irq(vp->pdev->irq);
}

/* Status 0 is a reset: done when the device reads it back */
static void vmmci_pci_reset(struct virtio_device *vdev)
{
	struct vmmci_pci *vp = to_vmmci_pci(vdev);
	u8 status;

	iowrite8(0, vp->ioaddr + VIRTIO_PCI_STATUS);
	if (read_poll_timeout(ioread8, status, !status, 1000,
			      VMMCI_PCI_RESET_TIMEOUT_US, false,
			      vp->ioaddr + VIRTIO_PCI_STATUS))
		dev_warn(&vp->pdev->dev, "status 0x%02x after reset\n", status);
	/* No config change callback runs on from before the reset */
	vmmci_pci_synchronize_cbs(vdev);
}

/* Legacy devices have 32 feature bits */
static u64 vmmci_pci_get_features(struct virtio_device *vdev)
{
	return ioread32(to_vmmci_pci(vdev)->ioaddr + VIRTIO_PCI_HOST_FEATURES);
}

static int vmmci_pci_finalize_features(struct virtio_device *vdev)
{
	/* Give virtio_ring a chance to accept features */
	vring_transport_features(vdev);

	if (WARN_ON_ONCE(upper_32_bits(vdev->features)))
		return -EINVAL;
	iowrite32(lower_32_bits(vdev->features),
		  to_vmmci_pci(vdev)->ioaddr + VIRTIO_PCI_GUEST_FEATURES);
	return 0;
}

static const char *vmmci_pci_bus_name(struct virtio_device *vdev)
{
	return pci_name(to_vmmci_pci(vdev)->pdev);
}

static irqreturn_t vmmci_pci_interrupt(int irq, void *opaque)
{
	struct vmmci_pci *vp = opaque;
	u8 isr;

	/* Reading ISR clears it and deasserts INTx */
	isr = ioread8(vp->ioaddr + VIRTIO_PCI_ISR);
	if (!isr)
		return IRQ_NONE;

	if (isr & VIRTIO_PCI_ISR_CONFIG)
		virtio_config_changed(&vp->vdev);
	return IRQ_HANDLED;
}

/* No virtqueues: only the config change interrupt, on the INTx line */
static int vmmci_pci_find_vqs(struct virtio_device *vdev, unsigned int nvqs,
			      struct virtqueue *vqs[],
			      struct virtqueue_info vqs_info[],
			      struct irq_affinity *desc)
{
	struct vmmci_pci *vp = to_vmmci_pci(vdev);
	int err;

	if (nvqs)
		return -ENOENT;
	if (WARN_ON_ONCE(vp->irq_requested))
		return -EBUSY;

	err = request_irq(vp->pdev->irq, vmmci_pci_interrupt, IRQF_SHARED,
			  dev_name(&vdev->dev), vp);
	if (err)
		return err;
	vp->irq_requested = true;
	return 0;
}

static void vmmci_pci_del_vqs(struct virtio_device *vdev)
{
	struct vmmci_pci *vp = to_vmmci_pci(vdev);

	if (!vp->irq_requested)
		return;
	free_irq(vp->pdev->irq, vp);
	vp->irq_requested = false;
}

static const struct virtio_config_ops vmmci_pci_config_ops = {
	.get			= vmmci_pci_get,
	.set			= vmmci_pci_set,
	.get_status		= vmmci_pci_get_status,
	.set_status		= vmmci_pci_set_status,
	.reset			= vmmci_pci_reset,
	.find_vqs		= vmmci_pci_find_vqs,
	.del_vqs		= vmmci_pci_del_vqs,
	.synchronize_cbs	= vmmci_pci_synchronize_cbs,
	.get_features		= vmmci_pci_get_features,
	.finalize_features	= vmmci_pci_finalize_features,
	.bus_name		= vmmci_pci_bus_name,
};

/* The virtio device is a kobject: free it when its last reference goes */
static void vmmci_pci_release(struct device *dev)
{
	kfree(to_vmmci_pci(dev_to_virtio(dev)));
}

static void vmmci_pci_unmap(struct vmmci_pci *vp)
{
	pci_iounmap(vp->pdev, vp->ioaddr);
	pci_release_region(vp->pdev, 0);
	pci_disable_device(vp->pdev);
}

static int vmmci_pci_map(struct vmmci_pci *vp)
{
	struct pci_dev *pdev = vp->pdev;
	int err;

	err = pci_enable_device(pdev);
	if (err)
		return err;

	if (!(pci_resource_flags(pdev, 0) & IORESOURCE_IO) ||
	    pci_resource_len(pdev, 0) < VMMCI_PCI_BAR_MIN) {
		dev_err(&pdev->dev, "BAR0 is not an I/O BAR of %u bytes or more\n",
			VMMCI_PCI_BAR_MIN);
		err = -ENODEV;
		goto err_disable;
	}
	/* Known once the device is enabled */
	if (!pdev->irq) {
		dev_err(&pdev->dev, "no interrupt line\n");
		err = -ENODEV;
		goto err_disable;
	}

	err = pci_request_region(pdev, 0, KBUILD_MODNAME);
	if (err)
		goto err_disable;
	vp->ioaddr = pci_iomap(pdev, 0, 0);
	if (!vp->ioaddr) {
		err = -EIO;
		goto err_release;
	}
	vp->config_len = pci_resource_len(pdev, 0) - VMMCI_PCI_CONFIG;
	return 0;

err_release:
	pci_release_region(pdev, 0);
err_disable:
	pci_disable_device(pdev);
	return err;
}

static int vmmci_pci_probe(struct pci_dev *pdev,
			   const struct pci_device_id *id)
{
	struct vmmci_pci *vp;
	int err;

	/* Legacy virtio only */
	if (pdev->revision != VIRTIO_PCI_ABI_VERSION) {
		dev_err(&pdev->dev, "unsupported revision %u\n",
			pdev->revision);
		return -ENODEV;
	}

	vp = kzalloc(sizeof(*vp), GFP_KERNEL);
	if (!vp)
		return -ENOMEM;
	vp->pdev = pdev;
	err = vmmci_pci_map(vp);
	if (err) {
		kfree(vp);
		return err;
	}

	vp->vdev.dev.parent = &pdev->dev;
	vp->vdev.dev.release = vmmci_pci_release;
	vp->vdev.config = &vmmci_pci_config_ops;
	/* The virtio ids of a legacy device, as virtio_pci takes them */
	vp->vdev.id.vendor = pdev->subsystem_vendor;
	vp->vdev.id.device = pdev->subsystem_device;
	pci_set_drvdata(pdev, vp);

	err = register_virtio_device(&vp->vdev);
	if (err) {
		vmmci_pci_unmap(vp);
		/* Initialized even so: its release frees vp */
		put_device(&vp->vdev.dev);
		return err;
	}
	return 0;
}

static void vmmci_pci_remove(struct pci_dev *pdev)
{
	struct vmmci_pci *vp = pci_get_drvdata(pdev);
	/* vp outlives the unregistration */
	struct device *dev = get_device(&vp->vdev.dev);

	unregister_virtio_device(&vp->vdev);
	vmmci_pci_unmap(vp);
	put_device(dev);
}

#ifdef CONFIG_PM_SLEEP
static int vmmci_pci_freeze(struct device *dev)
{
	struct vmmci_pci *vp = dev_get_drvdata(dev);
	int err;

	err = virtio_device_freeze(&vp->vdev);
	if (!err)
		pci_disable_device(vp->pdev);
	return err;
}

static int vmmci_pci_restore(struct device *dev)
{
	struct vmmci_pci *vp = dev_get_drvdata(dev);
	int err;

	err = pci_enable_device(vp->pdev);
	if (err)
		return err;
	return virtio_device_restore(&vp->vdev);
}
#endif

static SIMPLE_DEV_PM_OPS(vmmci_pci_pm_ops, vmmci_pci_freeze,
			 vmmci_pci_restore);

static const struct pci_device_id vmmci_pci_id_table[] = {
	{ PCI_DEVICE_SUB(VMMCI_PCI_VENDOR_OPENBSD, VMMCI_PCI_DEVICE_VMMCI,
			 VMMCI_PCI_VENDOR_OPENBSD, VMMCI_PCI_SUBDEVICE_VMMCI) },
	{ }
};
MODULE_DEVICE_TABLE(pci, vmmci_pci_id_table);

static struct pci_driver vmmci_pci_driver = {
	.name		= KBUILD_MODNAME,
	.id_table	= vmmci_pci_id_table,
	.probe		= vmmci_pci_probe,
	.remove		= vmmci_pci_remove,
	.driver.pm	= &vmmci_pci_pm_ops,
};
module_pci_driver(vmmci_pci_driver);

MODULE_DESCRIPTION("PCI transport of OpenBSD vmd's VMM control interface");
MODULE_LICENSE("GPL");
