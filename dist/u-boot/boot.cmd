# Airlift's boot.cmd: boots the A/B slot that the U-Boot environment names,
# counting the boots of a trial and falling back to the other slot by itself
# (see docs/u-boot.md and the agent's boot module documentation). It needs
# nothing but a writable environment (`saveenv`) and U-Boot's hush shell:
# not CONFIG_BOOTCOUNT_LIMIT. Build it with
#   mkimage -A arm64 -T script -C none -n airlift -d boot.cmd boot.scr
#
# The device's own part: where each slot's kernel is, what Linux calls each
# slot's root, and the rest of the kernel command line. These values are
# QEMU's arm64 "virt" machine (the disk crates/airlift-vm/src/uboot.rs
# boots); change them for your board.
setenv airlift_devtype virtio
setenv airlift_devnum 0
setenv airlift_part_a 2
setenv airlift_part_b 3
setenv airlift_root_a /dev/vda2
setenv airlift_root_b /dev/vda3
setenv airlift_kernel /boot/Image
setenv airlift_initrd /boot/initrd.img
setenv airlift_cmdline "console=ttyAMA0 rootwait ro panic=5"
# The trial boot: the same on every device. The variables are the agent's:
# airlift_slot (a or b; anything else boots a), upgrade_available (1 during
# a trial), bootcount (boots counted during the trial) and bootlimit (trial
# boots allowed, 3 when unset; 0 never falls back). U-Boot's `setexpr`
# counts in hexadecimal, so the count goes up by comparison: keep bootlimit
# at 9 or below. Only a trial boot saves the environment.
airlift_next=a
if test "${airlift_slot}" = "b"; then airlift_next=b; fi
airlift_trial=0
if test "${upgrade_available}" = "1"; then
  airlift_trial=1
  airlift_limit=3
  if test -n "${bootlimit}"; then airlift_limit=${bootlimit}; fi
  airlift_count=${bootcount}
  airlift_done=0
  for airlift_n in 1 2 3 4 5 6 7 8 9 10; do
    if test ${airlift_done} = 0 && test ${airlift_n} -gt "${bootcount}"; then
      airlift_count=${airlift_n}
      airlift_done=1
    fi
  done
  if test ${airlift_limit} -ne 0 && test ${airlift_count} -gt ${airlift_limit}; then
    # fall back to the other slot
    echo "airlift: slot ${airlift_next} was not committed after ${airlift_limit} trial boots; falling back"
    if test "${airlift_next}" = "a"; then airlift_next=b; else airlift_next=a; fi
    setenv airlift_slot ${airlift_next}
    setenv upgrade_available 0
    setenv bootcount 0
    airlift_trial=0
  else
    setenv bootcount ${airlift_count}
  fi
  airlift_saved=0
  saveenv && airlift_saved=1
  if test ${airlift_saved} = 0 && test ${airlift_trial} = 1; then
    # A trial whose count cannot be kept could boot a bad slot for ever.
    echo "airlift: cannot save the boot count; booting the other slot instead"
    if test "${airlift_next}" = "a"; then airlift_next=b; else airlift_next=a; fi
    airlift_trial=0
  fi
fi
if test "${airlift_next}" = "b"; then
  airlift_part=${airlift_part_b}
  airlift_root=${airlift_root_b}
else
  airlift_part=${airlift_part_a}
  airlift_root=${airlift_root_a}
fi
setenv bootargs "root=${airlift_root} airlift.slot=${airlift_next} ${airlift_cmdline}"
echo "airlift: booting slot ${airlift_next} from ${airlift_devtype} ${airlift_devnum}:${airlift_part} (trial ${airlift_trial}, bootcount ${bootcount})"
airlift_rd=-
if load ${airlift_devtype} ${airlift_devnum}:${airlift_part} ${ramdisk_addr_r} ${airlift_initrd}; then
  airlift_rd=${ramdisk_addr_r}:${filesize}
fi
if load ${airlift_devtype} ${airlift_devnum}:${airlift_part} ${kernel_addr_r} ${airlift_kernel}; then
  booti ${kernel_addr_r} ${airlift_rd} ${fdtcontroladdr}
fi
# Still here: the kernel did not load or start. A trial counts this boot and
# resets, so a slot that cannot boot falls back after bootlimit tries.
echo "airlift: cannot boot slot ${airlift_next}"
if test ${airlift_trial} = 1; then reset; fi
