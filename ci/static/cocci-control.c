// SPDX-License-Identifier: GPL-2.0
/*
 * The positive control of scripts/test's coccicheck: copied beside the
 * driver for that run only, where misc/array_size.cocci must report it.
 */
#include <linux/kernel.h>

static int vmmci_cocci_control_table[4];

int vmmci_cocci_control(void);

int vmmci_cocci_control(void)
{
	return sizeof(vmmci_cocci_control_table) /
		sizeof(vmmci_cocci_control_table[0]);
}
