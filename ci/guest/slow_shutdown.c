// SPDX-License-Identifier: GPL-2.0
/*
 * Test only: a platform device whose shutdown takes hold_ms.  Devices
 * shut down newest first, so once this module is loaded a guest that
 * powers off waits in device_shutdown(), after user-mode helpers are
 * disabled and before the vmmci device is shut down: the window in which
 * the e2e suite raises a host stop (scenario stop-during-shutdown).
 */
#include <linux/delay.h>
#include <linux/err.h>
#include <linux/module.h>
#include <linux/platform_device.h>

static unsigned int hold_ms = 5000;
module_param(hold_ms, uint, 0444);
MODULE_PARM_DESC(hold_ms, "how long the device's shutdown takes (ms)");

static struct platform_device *slow_pdev;

static int slow_probe(struct platform_device *pdev)
{
	return 0;
}

static void slow_shutdown(struct platform_device *pdev)
{
	dev_info(&pdev->dev, "holding the shutdown for %u ms\n", hold_ms);
	msleep(hold_ms);
	dev_info(&pdev->dev, "shutdown goes on\n");
}

static struct platform_driver slow_driver = {
	.driver.name	= "slow_shutdown",
	.probe		= slow_probe,
	.shutdown	= slow_shutdown,
};

static int __init slow_init(void)
{
	int err;

	err = platform_driver_register(&slow_driver);
	if (err)
		return err;
	slow_pdev = platform_device_register_simple("slow_shutdown", -1,
						    NULL, 0);
	if (IS_ERR(slow_pdev)) {
		platform_driver_unregister(&slow_driver);
		return PTR_ERR(slow_pdev);
	}
	return 0;
}
module_init(slow_init);

static void __exit slow_exit(void)
{
	platform_device_unregister(slow_pdev);
	platform_driver_unregister(&slow_driver);
}
module_exit(slow_exit);

MODULE_DESCRIPTION("Test device whose shutdown takes a while");
MODULE_LICENSE("GPL");
