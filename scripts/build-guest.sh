#!/usr/bin/env bash
# Build a tiny test guest: the installed Debian kernel + a busybox initramfs.
#
#   bash scripts/build-guest.sh [OUTDIR]      (default: <repo>/.guest)
#
# Produces OUTDIR/vmlinuz, OUTDIR/initramfs.cpio.gz and OUTDIR/stamp.
# Idempotent: when the stamp (kernel version + busybox + this script) matches, it does nothing.
#
# The guest's /init reads its job from the kernel command line:
#   vit.mode=ping|tcp-send|tcp-recv|http-send|http-recv|pktgen|idle|rx-count|shell   (default: idle)
#     http-send: serve vit.mib MiB of random data once at http://<guest>:<port>/data (busybox
#                httpd, one sendfile); http-recv: busybox wget http://<peer>:<port>/data (64 KiB
#                reads). Large writes and reads where busybox nc moves 1 KiB per syscall.
#   vit.ip=192.0.2.2/24   vit.peer=192.0.2.1   vit.peermac=aa:bb:..  (static ARP entry if given)
#   vit.count=N           (ping: echo requests; pktgen: frames)       default 5 / 1000
#   vit.port=P            (tcp-*: TCP port)                           default 5201
#   vit.mib=N             (tcp-send: MiB of random data to send)      default 4
#   vit.listen=1          (tcp-*: guest listens instead of connecting)
#   vit.pktsize=N         (pktgen frame size incl. header, no FCS)    default 60
#   vit.linkwait=S        (seconds to wait for carrier)               default 30
#   vit.hold=S            (idle: seconds to stay up; 0 = forever;
#                          rx-count: seconds to count, 0 = 5)         default 0
#   vit.pre=S             (sleep S seconds after link up, before the job) default 0
# and prints on the serial console (each on its own line):
#   VIT-BOOT <kernel release>
#   VIT-LINK up mac <mac>              | VIT-RESULT error <what>
#   VIT-RESULT ping ok|fail <received>/<sent>
#   VIT-RESULT sha256 <hex> bytes <n>  (*-send: of the data sent; *-recv: of the data received)
#   VIT-RESULT tcp ok|fail rc <nc exit status>
#   VIT-CPU busy <n> total <n> virtio-irqs <n>  (tcp-*, http-*: over the transfer; pktgen: while it
#                                       sends; rx-count: while it counts. The guest CPU's jiffies, busy =
#                                       not idle or iowait, and the interrupts its virtio devices raised)
#   VIT-RESULT pktgen ok|fail sent <n> errors <m>   (after pktgen's own "Result: OK: <usec>(...) usec, <n> ..." + "<pps>pps ..." lines)
#   VIT-RESULT rx-count packets <n> dropped <n> centis <n>   (eth0 rx_packets / rx_dropped gained over <n> centiseconds of /proc/uptime)
#   VIT-SOCKETS <local>><remote> st <state> q <tx:rx queue>; ...   (http-send, once httpd exits: /proc/net/tcp and tcp6)
#   VIT-TCP <the values of /proc/net/snmp's Tcp: line>     (RetransSegs, EstabResets, OutRsts ...)
#   VIT-TCPEXT <name>=<n> ...   (TcpExt counters about aborts, drops, prunes, overflows that are not 0)
#   VIT-STATS rx_packets <n> tx_packets <n> rx_bytes <n> tx_bytes <n> rx_dropped <n> tx_dropped <n>
#   VIT-DONE
# then powers off (poweroff -f), which makes QEMU exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="${1:-$repo/.guest}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

die() { echo "build-guest: $*" >&2; exit 1; }

busybox=/bin/busybox
[ -x "$busybox" ] || die "busybox not found: apt-get install busybox-static"
# busybox-static and busybox both install /bin/busybox; only the static one works in the initramfs
if ldd "$busybox" >/dev/null 2>&1; then die "$busybox is dynamically linked: apt-get install busybox-static"; fi
# grep without -q reads the whole list: -q exits at the match, and busybox writing the rest then
# dies of SIGPIPE, which pipefail reports as a failure (it did, once, in CI).
"$busybox" --list | grep -x nc >/dev/null || die "$busybox has no nc applet"

# Newest kernel in /boot that has its modules installed.
kver=""
for k in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sed 's#^/boot/vmlinuz-##' | sort -V -r); do
  if [ -f "/lib/modules/$k/modules.dep" ]; then kver="$k"; break; fi
done
[ -n "$kver" ] || die "no /boot/vmlinuz-* with /lib/modules/<ver>/modules.dep: apt-get install linux-image-amd64"
moddir="/lib/modules/$kver"

stamp="kernel=$kver $(sha256sum "/boot/vmlinuz-$kver" | cut -c1-16) busybox=$(sha256sum "$busybox" | cut -c1-16) script=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.cpio.gz" ]; then
  echo "build-guest: up to date ($out, kernel $kver)"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,etc,lib/modules/$kver,root,usr/bin,usr/sbin}

cp "$busybox" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
# the kernel needs /dev/console before /init starts
# (without root, /init reopens /dev/console from devtmpfs instead)
if [ "$(id -u)" = 0 ]; then
  mknod -m 600 "$root/dev/console" c 5 1
  mknod -m 666 "$root/dev/null" c 1 3
fi

# ---- modules: wanted modules in load order, each preceded by its dependencies ----
wanted="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net"
optional="pktgen"

modpath() { # module name -> path relative to moddir (first match in modules.dep), or empty
  local n="$1" alt
  alt="$(echo "$n" | tr _ -)"
  awk -F: -v a="/$n.ko" -v b="/$alt.ko" '{ p=$1; if (index(p, a) || index(p, b)) { print p; exit } }' "$moddir/modules.dep"
}
isbuiltin() {
  grep -qE "/$1\.ko$" "$moddir/modules.builtin" 2>/dev/null
}
deps_of() { # relative path -> its deps (relative paths) as listed in modules.dep
  awk -F: -v p="$1" '$1 == p { print $2; exit }' "$moddir/modules.dep"
}

order=()
declare -A seen=()
add_mod() { # relative path; add deps first (modules.dep lists deps of deps too, deepest last)
  local rel="$1" d deps
  [ -n "${seen[$rel]:-}" ] && return 0
  seen[$rel]=1
  deps="$(deps_of "$rel")"
  # modules.dep lists deps in "reverse load order": load the last one first
  for d in $(echo $deps | tr ' ' '\n' | tac); do add_mod "$d"; done
  order+=("$rel")
}
for m in $wanted; do
  rel="$(modpath "$m")"
  if [ -z "$rel" ]; then
    if isbuiltin "$m"; then echo "build-guest: $m is built into the kernel"; continue; fi
    case "$m" in
      virtio_pci_legacy_dev|virtio_pci_modern_dev|failover|net_failover) echo "build-guest: note: $m not found (older/newer kernel?)"; continue ;;
    esac
    die "module $m not found in $moddir (nor built in)"
  fi
  add_mod "$rel"
done
for m in $optional; do
  rel="$(modpath "$m")"
  if [ -n "$rel" ]; then add_mod "$rel"; elif isbuiltin "$m"; then :; else echo "build-guest: note: optional module $m not available"; fi
done

: > "$root/etc/modules.order"
for rel in "${order[@]}"; do
  src="$moddir/$rel"
  base="$(basename "$rel")"
  case "$base" in
    *.ko)     cp "$src" "$root/lib/modules/$kver/$base" ;;
    *.ko.xz)  xz -dc "$src" > "$root/lib/modules/$kver/${base%.xz}" ;;
    *.ko.zst) command -v zstd >/dev/null || die "$rel is zstd-compressed: apt-get install zstd"
              zstd -qdc "$src" > "$root/lib/modules/$kver/${base%.zst}" ;;
    *.ko.gz)  gzip -dc "$src" > "$root/lib/modules/$kver/${base%.gz}" ;;
    *) die "unknown module file type: $rel" ;;
  esac
  name="${base%%.ko*}"
  echo "$name" >> "$root/etc/modules.order"
done

# ---- /init ----
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mount -t tmpfs -o size=90% tmpfs /tmp   # room for a transfer file of most of the guest memory
[ -t 1 ] || exec </dev/console >/dev/console 2>&1

say() { echo ""; echo "$*"; }   # leading newline: never glued to a kernel message

# The CPU line of /proc/stat as "busy total" jiffies (busy: all but idle and iowait), and the interrupt count.
cpu_now() {
  read -r _ user nice system idle iowait irq softirq steal _ < /proc/stat
  # The virtio devices' interrupts only (/proc/interrupts, one CPU): /proc/stat's total also
  # counts the 250 Hz timer tick, which outnumbers the NIC's at some rates.
  virtio="$(awk '/virtio/ { n += $2 } END { print n + 0 }' /proc/interrupts)"
  echo "$((user + nice + system + irq + softirq + steal)) $((user + nice + system + idle + iowait + irq + softirq + steal)) $virtio"
}
# Says how busy the guest's CPU was since the cpu_now output in $1: is the guest the limit?
cpu_since() {
  set -- $1 $(cpu_now)
  say "VIT-CPU busy $(($4 - $1)) total $(($5 - $2)) virtio-irqs $(($6 - $3))"
}

# Waits (at most ~60 s) until no TCP socket to or from port $1 still has data or a FIN to deliver:
# poweroff -f would drop what the guest's kernel has not sent yet.
tcp_drained() {
  p="$(printf '%04X' "$1")"
  i=0
  while [ $i -lt 600 ]; do
    # st 01 ESTABLISHED, 04 FIN_WAIT1, 09 LAST_ACK, 0B CLOSING: bytes or a FIN not yet acknowledged.
    # Both tables: a server (busybox nc -l) listens on IPv6 and its IPv4 connections are in tcp6.
    busy="$(awk -v p=":$p" 'FNR > 1 && (substr($2, length($2) - 4) == p || substr($3, length($3) - 4) == p) && ($4 == "01" || $4 == "04" || $4 == "09" || $4 == "0B") { n++ } END { print n + 0 }' /proc/net/tcp /proc/net/tcp6)"
    [ "$busy" = 0 ] && return 0
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}

finish() {
  if [ -d /sys/class/net/eth0/statistics ]; then
    s=/sys/class/net/eth0/statistics
    # TCP's own counters (RetransSegs, EstabResets, OutRsts ...): why a transfer fell short.
    say "VIT-TCP $(grep '^Tcp:' /proc/net/snmp | tail -1 | cut -d' ' -f2-)"
    # Why a connection ended without its peer seeing it: the TcpExt abort counters, by name.
    say "VIT-TCPEXT $(awk '$1 == "TcpExt:" { if (n == "") { n = $0 } else { split(n, k); for (i = 2; i <= NF; i++) if (k[i] ~ /Abort|Prune|Drop|Overflow/ && $i != 0) printf "%s=%s ", k[i], $i } }' /proc/net/netstat)"
    say "VIT-STATS rx_packets $(cat $s/rx_packets) tx_packets $(cat $s/tx_packets) rx_bytes $(cat $s/rx_bytes) tx_bytes $(cat $s/tx_bytes) rx_dropped $(cat $s/rx_dropped) tx_dropped $(cat $s/tx_dropped)"
  fi
  say "VIT-DONE"
  sync
  poweroff -f
  sleep 5
  echo o > /proc/sysrq-trigger
}

say "VIT-BOOT $(uname -r)"

MODE=idle IP=192.0.2.2/24 PEER=192.0.2.1 PEERMAC= COUNT= PORT=5201 MIB=4 LISTEN=0 PKTSIZE=60 LINKWAIT=30 HOLD=0 PRE=0
for w in $(cat /proc/cmdline); do
  case "$w" in
    vit.mode=*) MODE="${w#*=}" ;;
    vit.ip=*) IP="${w#*=}" ;;
    vit.peer=*) PEER="${w#*=}" ;;
    vit.peermac=*) PEERMAC="${w#*=}" ;;
    vit.count=*) COUNT="${w#*=}" ;;
    vit.port=*) PORT="${w#*=}" ;;
    vit.mib=*) MIB="${w#*=}" ;;
    vit.listen=*) LISTEN="${w#*=}" ;;
    vit.pktsize=*) PKTSIZE="${w#*=}" ;;
    vit.linkwait=*) LINKWAIT="${w#*=}" ;;
    vit.hold=*) HOLD="${w#*=}" ;;
    vit.pre=*) PRE="${w#*=}" ;;
  esac
done

KVER="$(uname -r)"
for m in $(cat /etc/modules.order); do
  insmod "/lib/modules/$KVER/$m.ko" 2>/tmp/insmod.err || say "VIT-MODULE fail $m $(cat /tmp/insmod.err)"
done
# keep the console for our lines from here on
dmesg -n 1 2>/dev/null || true

ip link set lo up
if [ "$MODE" = shell ]; then
  say "VIT-SHELL"
  setsid cttyhack sh
  finish
fi

i=0
while [ ! -d /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
if [ ! -d /sys/class/net/eth0 ]; then
  say "VIT-RESULT error no-eth0"
  dmesg | grep -i virtio | tail -n 20
  finish
fi
ip addr add "$IP" dev eth0
ip link set eth0 up
i=0
limit=$((LINKWAIT*10))
while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $i -lt $limit ]; do sleep 0.1; i=$((i+1)); done
if [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ]; then
  say "VIT-RESULT error no-carrier"
  finish
fi
MAC="$(cat /sys/class/net/eth0/address)"
say "VIT-LINK up mac $MAC"
[ -n "$PEERMAC" ] && ip neigh replace "$PEER" lladdr "$PEERMAC" dev eth0 nud permanent
[ "$PRE" != 0 ] && sleep "$PRE"

case "$MODE" in
  ping)
    n=${COUNT:-5}
    out="$(ping -c "$n" -i 0.2 -W 3 "$PEER" 2>&1)"
    rc=$?
    echo "$out" | tail -n 3
    got="$(echo "$out" | sed -n 's/.* \([0-9][0-9]*\) packets received.*/\1/p')"
    [ -n "$got" ] || got=0
    if [ "$got" = "$n" ]; then say "VIT-RESULT ping ok $got/$n"; else say "VIT-RESULT ping fail $got/$n"; fi
    ;;
  tcp-send)
    head -c "$((MIB * 1048576))" /dev/urandom > /tmp/data
    sum="$(sha256sum /tmp/data | cut -d' ' -f1)"
    bytes="$(stat -c %s /tmp/data)"
    say "VIT-RESULT sha256 $sum bytes $bytes"
    cpu0="$(cpu_now)"
    if [ "$LISTEN" = 1 ]; then nc -l -p "$PORT" < /tmp/data > /dev/null; rc=$?
    else nc -w 10 "$PEER" "$PORT" < /tmp/data > /dev/null; rc=$?; fi
    tcp_drained "$PORT" || rc=124
    cpu_since "$cpu0"
    if [ $rc = 0 ]; then say "VIT-RESULT tcp ok rc $rc"; else say "VIT-RESULT tcp fail rc $rc"; fi
    ;;
  http-send)
    mkdir -p /tmp/www
    head -c "$((MIB * 1048576))" /dev/urandom > /tmp/www/data
    sum="$(sha256sum /tmp/www/data | cut -d' ' -f1)"
    bytes="$(stat -c %s /tmp/www/data)"
    say "VIT-RESULT sha256 $sum bytes $bytes"
    cpu0="$(cpu_now)"
    # One connection, one request: nc execs httpd in inetd mode on it.
    nc -l -p "$PORT" -e httpd -i -h /tmp/www; rc=$?
    say "VIT-SOCKETS $(awk 'FNR > 1 { printf "%s>%s st %s q %s; ", $2, $3, $4, $5 }' /proc/net/tcp /proc/net/tcp6)"
    tcp_drained "$PORT" || rc=124
    cpu_since "$cpu0"
    if [ $rc = 0 ]; then say "VIT-RESULT tcp ok rc $rc"; else say "VIT-RESULT tcp fail rc $rc"; fi
    ;;
  http-recv)
    cpu0="$(cpu_now)"
    wget -q -O /tmp/data "http://$PEER:$PORT/data"; rc=$?
    cpu_since "$cpu0"
    sum="$(sha256sum /tmp/data | cut -d' ' -f1)"
    bytes="$(stat -c %s /tmp/data)"
    say "VIT-RESULT sha256 $sum bytes $bytes"
    if [ $rc = 0 ]; then say "VIT-RESULT tcp ok rc $rc"; else say "VIT-RESULT tcp fail rc $rc"; fi
    ;;
  tcp-recv)
    # stdin must never hit EOF: busybox nc half-closes on stdin EOF, and a busybox nc peer
    # exits as soon as it reads that FIN, before it has sent everything. A fifo opened
    # read-write never delivers EOF.
    mkfifo /tmp/hold
    cpu0="$(cpu_now)"
    if [ "$LISTEN" = 1 ]; then nc -l -p "$PORT" <> /tmp/hold > /tmp/data; rc=$?
    else nc -w 10 "$PEER" "$PORT" <> /tmp/hold > /tmp/data; rc=$?; fi
    cpu_since "$cpu0"
    sum="$(sha256sum /tmp/data | cut -d' ' -f1)"
    bytes="$(stat -c %s /tmp/data)"
    say "VIT-RESULT sha256 $sum bytes $bytes"
    if [ $rc = 0 ]; then say "VIT-RESULT tcp ok rc $rc"; else say "VIT-RESULT tcp fail rc $rc"; fi
    ;;
  pktgen)
    n=${COUNT:-1000}
    if [ ! -d /proc/net/pktgen ]; then
      say "VIT-RESULT pktgen fail no-pktgen"
    else
      echo "rem_device_all" > /proc/net/pktgen/kpktgend_0
      echo "add_device eth0" > /proc/net/pktgen/kpktgend_0
      pg=/proc/net/pktgen/eth0
      echo "count $n" > $pg
      echo "pkt_size $PKTSIZE" > $pg
      echo "delay 0" > $pg
      echo "clone_skb 0" > $pg
      echo "dst ${PEER%/*}" > $pg
      echo "src_min ${IP%/*}" > $pg
      echo "src_max ${IP%/*}" > $pg
      echo "dst_mac ${PEERMAC:-ff:ff:ff:ff:ff:ff}" > $pg
      c0="$(cpu_now)"
      echo "start" > /proc/net/pktgen/pgctrl
      cpu_since "$c0"
      sent="$(sed -n 's/.*pkts-sofar: *\([0-9]*\).*/\1/p' $pg)"
      errs="$(sed -n 's/.*errors: *\([0-9]*\).*/\1/p' $pg)"
      grep -A1 -E 'Result' $pg
      if [ "${sent:-0}" = "$n" ]; then say "VIT-RESULT pktgen ok sent $sent errors ${errs:-0}"; else say "VIT-RESULT pktgen fail sent ${sent:-0} errors ${errs:-0}"; fi
    fi
    ;;
  rx-count)
    # frames the back-end sends us: eth0's rx counters over HOLD seconds, timed by /proc/uptime
    st=/sys/class/net/eth0/statistics
    secs=$HOLD; [ "$secs" = 0 ] && secs=5
    c0="$(cpu_now)"
    t0="$(cut -d' ' -f1 /proc/uptime)"; r0="$(cat $st/rx_packets)"; d0="$(cat $st/rx_dropped)"
    sleep "$secs"
    t1="$(cut -d' ' -f1 /proc/uptime)"; r1="$(cat $st/rx_packets)"; d1="$(cat $st/rx_dropped)"
    cpu_since "$c0"
    say "VIT-RESULT rx-count packets $((r1 - r0)) dropped $((d1 - d0)) centis $(( ${t1%.*}${t1#*.} - ${t0%.*}${t0#*.} ))"
    ;;
  idle)
    say "VIT-RESULT idle"
    if [ "$HOLD" = 0 ]; then while :; do sleep 3600; done; else sleep "$HOLD"; fi
    ;;
  *)
    say "VIT-RESULT error unknown-mode $MODE"
    ;;
esac
finish
INIT
chmod 755 "$root/init"

cp "/boot/vmlinuz-$kver" "$work/vmlinuz"
(cd "$root" && find . -print0 | sort -z | cpio --null -o -H newc --quiet) | gzip -9n > "$work/initramfs.cpio.gz"
mv -f "$work/vmlinuz" "$out/vmlinuz"
mv -f "$work/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
printf '%s\n' "${order[@]}" > "$out/modules.txt"
echo "$stamp" > "$out/stamp"
echo "build-guest: built $out (kernel $kver, modules: $(tr '\n' ' ' < "$root/etc/modules.order"))"
