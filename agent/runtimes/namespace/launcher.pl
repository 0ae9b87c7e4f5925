# wrenn namespace launcher: builds one sandbox's namespaces and root, then execs its first process.
#
# Run by root on the host (the agent passes this file with `perl -e`; perl-base is part of every Debian
# system and its syscall() reaches what Node cannot: setns, unshare, mount, pivot_root, prctl). It
# replaces bubblewrap because bubblewrap always sets no_new_privs, and with no_new_privs sudo cannot
# work inside; here the seccomp filter is loaded with CAP_SYS_ADMIN of the sandbox's own user
# namespace instead, so setuid binaries still raise privileges, but only up to root of the sandbox.
#
# Steps (each failure prints "wrenn-launch: <step>: <error>" and exits 125):
#   as host root     join the sandbox's cgroups; enter its network namespace; set per-netns sysctls;
#                    a private mount namespace;
#   helper (root)    writes the user namespace's uid/gid maps (guest 0..count-1 -> host base..), then
#                    assembles the root in the private mount namespace: the template tree as an
#                    idmapped (guest-root-owned) lower layer, the writable layer on the sandbox's own
#                    ext4 image (loop device, detached automatically when the sandbox ends) or a plain
#                    directory, an overlay of both, and a read-only sysfs of the sandbox's netns;
#   as guest root    (host uid = base) new mount, pid, uts, ipc and cgroup namespaces owned by the
#                    sandbox's user namespace; this process stays outside as the monitor and exits
#                    with the sandbox's first process;
#   pid 1 (child)    /proc with masked and read-only paths, a minimal /dev, /run; pivot_root; hostname;
#                    capability bounding set; seccomp filter; exec the first process.
# Arguments: see namespaceGuestCommand in launch.ts, which is the only caller.
# No `use warnings` here: warnings.pm costs milliseconds of every start; launch.test.ts compiles the
# script with -w instead, so a warning still fails a test.
use strict;

my %SYS = (
  exit_group => 231, setsid => 112, setgroups => 116, setresuid => 117, setresgid => 119, pivot_root => 155, prctl => 157,
  mount => 165, umount2 => 166, sethostname => 170, unshare => 272, setns => 308, open_tree => 428,
  move_mount => 429, mount_setattr => 442,
);
# Constants as subs with an empty prototype, which perl inlines (constant.pm costs milliseconds to load).
sub CLONE_NEWNS() { 0x00020000 }
sub CLONE_NEWCGROUP() { 0x02000000 }
sub CLONE_NEWUTS() { 0x04000000 }
sub CLONE_NEWIPC() { 0x08000000 }
sub CLONE_NEWUSER() { 0x10000000 }
sub CLONE_NEWPID() { 0x20000000 }
sub CLONE_NEWNET() { 0x40000000 }
sub MS_RDONLY() { 1 }
sub MS_NOSUID() { 2 }
sub MS_NODEV() { 4 }
sub MS_NOEXEC() { 8 }
sub MS_REMOUNT() { 32 }
sub MS_BIND() { 4096 }
sub MS_REC() { 16384 }
sub MS_PRIVATE() { 1 << 18 }
sub MS_SLAVE() { 1 << 19 }
sub MNT_DETACH() { 2 }
sub AT_FDCWD() { -100 }
sub AT_EMPTY_PATH() { 0x1000 }
sub AT_RECURSIVE() { 0x8000 }
sub OPEN_TREE_CLONE() { 1 }
sub OPEN_TREE_CLOEXEC() { 0x80000 }
sub MOVE_MOUNT_F_EMPTY_PATH() { 4 }
sub MOUNT_ATTR_IDMAP() { 0x00100000 }
sub PR_SET_PDEATHSIG() { 1 }
sub PR_SET_SECCOMP() { 22 }
sub PR_CAPBSET_DROP() { 24 }
sub PR_CAP_AMBIENT() { 47 }
sub PR_CAP_AMBIENT_CLEAR_ALL() { 4 }
sub SECCOMP_MODE_FILTER() { 2 }
sub LOOP_CTL_GET_FREE() { 0x4C82 }
sub LOOP_CONFIGURE() { 0x4C0A }
sub LO_FLAGS_AUTOCLEAR() { 4 }
# errno values (Errno.pm, which %! loads, costs milliseconds too).
sub EBUSY() { 16 }
sub EEXIST() { 17 }
sub EINVAL() { 22 }

# _exit(2): no END blocks, no flushing of buffers a forked process shares (POSIX.pm costs ms to load).
sub quit { my @code = ($_[0]); syscall($SYS{exit_group}, @code); }
sub fail { print STDERR "wrenn-launch: $_[0]: $!\n"; quit(125); }
# syscall() may write through string arguments, so it gets copies (literals are read-only).
sub sys {
  my ($name, $what, @args) = @_;
  my $r = syscall($SYS{$name}, @args);
  fail($what) if $r == -1;
  return $r;
}
# --timing: "wrenn-launch: at <unix ms> <step>" lines on stderr (the console log), for the agent's debug
# log and the benchmark's phase split; clock_gettime(CLOCK_REALTIME) directly (Time::HiRes is not in
# perl-base), so the agent can line them up with its own clock.
my $timing = 0;
sub mark {
  return unless $timing;
  my $t = "\0" x 16;
  syscall(228, 0, $t);
  my ($s, $ns) = unpack('q q', $t);
  printf STDERR "wrenn-launch: at %.1f %s\n", $s * 1000 + $ns / 1e6, $_[0];
}
sub write_file {
  my ($path, $text) = @_;
  open(my $fh, '>', $path) or fail("open $path");
  syswrite($fh, $text) // fail("write $path");
  close($fh) or fail("close $path");
}

# --- arguments ---------------------------------------------------------------------------------------
my (@cgroups, @sysctls, @env, @keep_caps, @init);
my %o = (count => 65536);
while (@ARGV) {
  my $a = shift @ARGV;
  if ($a eq '--') { @init = @ARGV; last; }
  elsif ($a eq '--cgroup') { push @cgroups, shift @ARGV; }
  elsif ($a eq '--sysctl') { push @sysctls, [shift @ARGV, shift @ARGV]; }
  elsif ($a eq '--setenv') { push @env, [shift @ARGV, shift @ARGV]; }
  elsif ($a eq '--keep-cap') { push @keep_caps, shift @ARGV; }
  elsif ($a eq '--die-with-parent') { $o{die_with_parent} = 1; }
  elsif ($a eq '--timing') { $timing = 1; }
  elsif ($a =~ /^--(netns|lower|mounts|upper|work|disk|id-base|id-count|hostname|seccomp)$/) {
    my $k = $1; $k =~ s/-/_/g; $o{$k} = shift @ARGV;
  }
  else { $! = 22; fail("unknown argument $a"); }
}
$o{count} = $o{id_count} if defined $o{id_count};
for my $k (qw(lower mounts id_base hostname seccomp)) { unless (defined $o{$k}) { $! = 22; fail("missing --$k"); } }
unless (@init) { $! = 22; fail("missing the first process after --"); }
unless (defined $o{disk} or (defined $o{upper} and defined $o{work})) { $! = 22; fail("need --disk or --upper and --work"); }
mark('started');

# --- host root: cgroups, network namespace, private mount namespace ----------------------------------
for my $dir (@cgroups) { write_file("$dir/cgroup.procs", "$$\n"); }
mark('joined cgroups');
if (defined $o{netns}) {
  open(my $ns, '<', "/run/netns/$o{netns}") or fail("open netns $o{netns}");
  sys('setns', "setns $o{netns}", fileno($ns), CLONE_NEWNET);
  close($ns);
}
for my $s (@sysctls) {
  (my $path = $s->[0]) =~ s{\.}{/}g;
  write_file("/proc/sys/$path", "$s->[1]\n");
}
mark('entered netns');
prctl_pdeathsig() if $o{die_with_parent};
sub prctl_pdeathsig { sys('prctl', 'parent death signal', PR_SET_PDEATHSIG, 9, 0, 0, 0); }

# Where the helper mounts the sandbox's root inside the sandbox's private mount namespace: a directory
# every host has and that the guest's host uid can reach (the sandbox directory may not be reachable).
my $root_at = "/tmp";

# --- the helper: id maps, then the root tree (it stays host root in the initial user namespace) --------
my $monitor = $$;
pipe(my $to_helper_r, my $to_helper_w) or fail('pipe');
pipe(my $from_helper_r, my $from_helper_w) or fail('pipe');
my $helper = fork() // fail('fork helper');
if ($helper == 0) {
  close($to_helper_w);
  close($from_helper_r);
  sysread($to_helper_r, my $b, 1) // fail('wait for the user namespace');
  my $map = "0 $o{id_base} $o{count}\n";
  write_file("/proc/$monitor/uid_map", $map);
  write_file("/proc/$monitor/gid_map", $map);
  open(my $userns, '<', "/proc/$monitor/ns/user") or fail('open the user namespace');
  mark('helper: id maps written');
  syswrite($from_helper_w, "m") // fail('signal the monitor');
  sysread($to_helper_r, $b, 1) or fail('wait for the mount namespace');
  # Mounts made here, in a mount namespace the sandbox's user namespace owns, are not locked: pid 1 can
  # pivot_root into them. Only root of the initial user namespace may make them (overlay, sysfs, loop).
  open(my $mntns, '<', "/proc/$monitor/ns/mnt") or fail('open the mount namespace');
  sys('setns', 'enter the mount namespace', fileno($mntns), CLONE_NEWNS);
  mark('helper: entered the mount namespace');

  # The template tree, idmapped so that its root-owned files belong to the guest's root.
  my $tree = sys('open_tree', "open_tree $o{lower}", AT_FDCWD, $o{lower}, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
  my $attr = pack('QQQQ', MOUNT_ATTR_IDMAP, 0, 0, fileno($userns));
  sys('mount_setattr', 'idmap the template tree', $tree, "", AT_EMPTY_PATH | AT_RECURSIVE, $attr, length($attr));
  my $lower_at = "$o{mounts}/lower";
  mkdir($lower_at, 0700) or $! == EEXIST or fail("mkdir $lower_at");
  sys('move_mount', 'mount the idmapped template tree', $tree, "", AT_FDCWD, $lower_at, MOVE_MOUNT_F_EMPTY_PATH);
  mark('helper: idmapped template mounted');

  my ($upper, $work) = ($o{upper}, $o{work});
  if (defined $o{disk}) {
    # The writable layer lives on the sandbox's own ext4 image: filling it is ENOSPC for the sandbox only.
    my $disk_at = "$o{mounts}/disk";
    mkdir($disk_at, 0700) or $! == EEXIST or fail("mkdir $disk_at");
    # The loop device stays open until the mount holds it: with autoclear, the last close detaches it.
    my ($dev, $loop) = attach_loop($o{disk});
    mark('helper: loop attached');
    sys('mount', "mount $o{disk}", $dev, $disk_at, "ext4", MS_NOSUID | MS_NODEV, "noinit_itable");
    close($loop);
    mark('helper: disk mounted');
    ($upper, $work) = ("$disk_at/upper", "$disk_at/work");
    for my $d ($upper, $work) { mkdir($d, 0755) or $! == EEXIST or fail("mkdir $d"); }
  }
  # The merged root is the upper directory's inode: it must belong to the guest's root.
  chown($o{id_base}, $o{id_base}, $upper) or fail("chown $upper");
  sys('mount', 'mount the overlay', "overlay", $root_at, "overlay", MS_NODEV, "lowerdir=$lower_at,upperdir=$upper,workdir=$work");
  mark('helper: overlay mounted');
  # sysfs shows the mounter's network namespace; only root of the initial user namespace may mount it.
  sys('mount', 'mount sysfs', "sysfs", "$root_at/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
  if (-d "$root_at/sys/firmware") {
    sys('mount', 'mask /sys/firmware', "tmpfs", "$root_at/sys/firmware", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0");
  }
  quit(0);
}
close($to_helper_r);
mark('helper forked');
close($from_helper_w);
sys('unshare', 'unshare user namespace', CLONE_NEWUSER);
mark('user namespace');
syswrite($to_helper_w, "u") // fail('signal the helper');
sysread($from_helper_r, my $ack, 1) or helper_failed();
sys('setgroups', 'setgroups', 0, 0);
sys('setresgid', 'setresgid', 0, 0, 0);
sys('setresuid', 'setresuid', 0, 0, 0);
prctl_pdeathsig() if $o{die_with_parent};
sys('unshare', 'unshare namespaces', CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP);
sys('mount', 'make / private', "none", "/", 0, MS_REC | MS_PRIVATE, 0);
mark('namespaces');
syswrite($to_helper_w, "n") // fail('signal the helper');
close($to_helper_w);
waitpid($helper, 0);
helper_failed() if $? != 0;
mark('helper done');

sub helper_failed { $! = 5; fail('the root helper failed (see above)'); }

sub attach_loop {
  my ($image) = @_;
  open(my $ctl, '+<', '/dev/loop-control') or fail('open /dev/loop-control');
  open(my $backing, '+<', $image) or fail("open $image");
  for (1 .. 20) {
    my $n = ioctl($ctl, LOOP_CTL_GET_FREE, 0) // fail('LOOP_CTL_GET_FREE');
    $n = 0 if $n eq '0 but true';
    open(my $loop, '+<', "/dev/loop$n") or fail("open /dev/loop$n");
    # struct loop_config: fd, block_size, loop_info64 (lo_flags at byte 52 of it), reserved.
    my $info = pack('x52 L x176', LO_FLAGS_AUTOCLEAR);
    my $config = pack('L L', fileno($backing), 0) . $info . ("\0" x 64);
    if (ioctl($loop, LOOP_CONFIGURE, $config)) { return ("/dev/loop$n", $loop); }
    fail("LOOP_CONFIGURE /dev/loop$n") unless $! == EBUSY;
    # Another launcher took this device between GET_FREE and CONFIGURE: ask again.
  }
  fail('no free loop device');
}

# --- the monitor: outside the pid namespace, it only waits, and exits as the sandbox's first process did.
my $child = fork() // fail('fork pid 1');
if ($child != 0) {
  waitpid($child, 0);
  quit(($? & 127) ? 128 + ($? & 127) : $? >> 8);
}

# --- pid 1 --------------------------------------------------------------------------------------------
sys('setsid', 'setsid');
prctl_pdeathsig() if $o{die_with_parent};
chdir($root_at) or fail("chdir into the sandbox's root");
mark('pid 1');
sys('mount', 'mount /proc', "proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
# Docker's masked and read-only paths: kernel memory, keys, timers and host-wide knobs stay out of reach.
for my $f (qw(kcore keys timer_list sched_debug latency_stats timer_stats)) {
  next unless -e "proc/$f";
  sys('mount', "mask /proc/$f", "/dev/null", "proc/$f", 0, MS_BIND, 0);
}
for my $d (qw(acpi scsi asound)) {
  next unless -d "proc/$d";
  sys('mount', "mask /proc/$d", "tmpfs", "proc/$d", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0");
}
for my $p (qw(sys sysrq-trigger bus fs irq)) {
  next unless -e "proc/$p";
  sys('mount', "bind /proc/$p", "proc/$p", "proc/$p", 0, MS_BIND | MS_REC, 0);
  sys('mount', "read-only /proc/$p", "proc/$p", "proc/$p", 0, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
}
# /dev: only the usual devices, bound from the host's devtmpfs; its own devpts; shm and mqueue.
sys('mount', 'mount /dev', "tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=1m");
for my $n (qw(null zero full random urandom tty)) {
  write_file("dev/$n", "");
  sys('mount', "bind /dev/$n", "/dev/$n", "dev/$n", 0, MS_BIND, 0);
}
mkdir("dev/pts", 0755) or fail('mkdir /dev/pts');
sys('mount', 'mount /dev/pts', "devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620,gid=5");
symlink("pts/ptmx", "dev/ptmx") or fail('symlink /dev/ptmx');
mkdir("dev/shm", 01777) or fail('mkdir /dev/shm');
sys('mount', 'mount /dev/shm', "shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
mkdir("dev/mqueue", 0755) or fail('mkdir /dev/mqueue');
sys('mount', 'mount /dev/mqueue', "mqueue", "dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
symlink("/proc/self/fd", "dev/fd") or fail('symlink /dev/fd');
symlink("/proc/self/fd/$_->[1]", "dev/$_->[0]") or fail("symlink /dev/$_->[0]") for (["stdin", 0], ["stdout", 1], ["stderr", 2]);
sys('mount', 'mount /run', "tmpfs", "run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755");
mark('pid 1: proc, dev, run mounted');

sys('pivot_root', 'pivot_root', ".", ".");
sys('umount2', 'detach the host root', ".", MNT_DETACH);
chdir("/") or fail('chdir /');
sys('sethostname', 'sethostname', $o{hostname}, length($o{hostname}));

# Capabilities: what root of the sandbox keeps, in every process it starts (the bounding set).
my %keep = map { $_ => 1 } map { split /,/ } @keep_caps;
for my $cap (0 .. 63) {
  next if $keep{$cap};
  my @args = (PR_CAPBSET_DROP, $cap, 0, 0, 0);
  my $r = syscall($SYS{prctl}, @args);
  fail("drop capability $cap") if $r == -1 && $! != EINVAL;
}
sys('prctl', 'clear ambient capabilities', PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
mark('pid 1: pivoted, capabilities dropped');

%ENV = ();
$ENV{$_->[0]} = $_->[1] for @env;

# Last: the seccomp filter (a classic BPF program from seccomp.ts). CAP_SYS_ADMIN in this user namespace
# allows it without no_new_privs; execve below drops that capability with the bounding set.
my $program = pack('H*', $o{seccomp});
my $fprog = pack('S x6 Q', length($program) / 8, unpack('J', pack('p', $program)));
sys('prctl', 'load the seccomp filter', PR_SET_SECCOMP, SECCOMP_MODE_FILTER, $fprog, 0, 0);
mark('exec');
exec { $init[0] } @init or fail("exec $init[0]");
