#!/bin/busybox sh
# /init of the kernel peer's initramfs: mount the usual file systems, load
# the modules a peer needs, start the command agent on the second serial
# port, and then either give the console a shell (kernelpeer.shell=1 on
# the kernel command line) or wait.
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmp /tmp
echo /sbin/modprobe >/proc/sys/kernel/modprobe
# The IV generators (seqiv, echainiv) need the default RNG; the rest of
# the crypto loads on demand.
modprobe -a virtio_pci virtio_net drbg jitterentropy_rng xfrm_user esp4 esp6 ah4 ah6 \
	xfrm4_tunnel xfrm6_tunnel ipcomp ipcomp6 aesni_intel
ip link set lo up
for i in eth0; do ip link set "$i" up 2>/dev/null; done
/usr/bin/kernel-peer guest-agent /dev/ttyS1 </dev/null >/dev/console 2>&1 &
if grep -q 'kernelpeer.shell=1' /proc/cmdline; then
	echo "kernel peer: $(uname -r), modules loaded; 'poweroff -f' ends the VM"
	setsid cttyhack /usr/bin/bash -l
	poweroff -f
fi
while :; do sleep 3600; done
