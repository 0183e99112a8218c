# SPDX-License-Identifier: GPL-2.0
"""A network of one guest and one NTP server, for the NTP baseline.

QEMU's socket netdev (-netdev socket,udp=...) carries the guest's Ethernet
frames, one per UDP datagram, to this process.  It answers ARP for the
server's address and NTP (mode 3 requests, RFC 5905) sent to it, with the
host clock that the model reports to the guest (the host's CLOCK_REALTIME
plus the offset set through QMP), and drops everything else: the guest
reaches nothing but its time server, as a vmd guest reaches the host's
ntpd over vmd's local network.  No QEMU user networking (slirp) and no
host network configuration are needed.
"""

import socket
import struct
import threading
import time

SERVER_IP = '10.0.2.2'
GUEST_IP = '10.0.2.15'
SERVER_MAC = bytes.fromhex('525400000202')
GUEST_MAC = '52:54:00:12:34:56'
# Seconds from the NTP epoch (1900) to the Unix epoch
NTP_UNIX = 2208988800
NS = 1000000000


def ntp_time(ns):
    """A Unix time in ns as a 64-bit NTP timestamp."""
    sec, frac = divmod(ns, NS)
    return struct.pack('!II', (sec + NTP_UNIX) & 0xffffffff,
                       (frac << 32) // NS)


def ip_checksum(header):
    total = sum(struct.unpack('!%dH' % (len(header) // 2), header))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class NtpNet:
    """The server side of one guest's network; now_ns() gives the host
    time to serve, in ns since the Unix epoch."""

    def __init__(self, now_ns):
        self.now_ns = now_ns
        self.server_ip = socket.inet_aton(SERVER_IP)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('127.0.0.1', 0))
        self.port = self.sock.getsockname()[1]
        self.qemu_port = free_udp_port()
        self.closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def qemu_args(self):
        """QEMU options for the guest's NIC on this network."""
        return ['-netdev', 'socket,id=net0,udp=127.0.0.1:%d,'
                'localaddr=127.0.0.1:%d' % (self.port, self.qemu_port),
                # no option ROM: the kernel is booted directly, and
                # Debian's iPXE ROMs need not be installed
                '-device', 'virtio-net-pci,netdev=net0,romfile=,mac=' +
                GUEST_MAC]

    @staticmethod
    def guest_setup():
        """The guest's shell commands that bring its side up."""
        return ('ip link set lo up; ip addr add %s/24 dev eth0; '
                'ip link set eth0 up' % GUEST_IP)

    def close(self):
        self.closed = True
        self.sock.close()

    def _serve(self):
        while not self.closed:
            try:
                frame, addr = self.sock.recvfrom(65536)
            except OSError:
                return
            received = self.now_ns()
            reply = self.answer(frame, received)
            if reply:
                try:
                    self.sock.sendto(reply(), addr)
                except OSError:
                    return

    def answer(self, frame, received):
        """A function that builds the reply frame (called at the last
        moment, for the transmit timestamp), or None."""
        if len(frame) < 42:
            return None
        src_mac, ethertype = frame[6:12], frame[12:14]
        if ethertype == b'\x08\x06':
            return self.arp(frame, src_mac)
        if ethertype == b'\x08\x00':
            return self.ntp(frame, src_mac, received)
        return None

    def arp(self, frame, src_mac):
        op, sha, spa, tpa = (frame[20:22], frame[22:28], frame[28:32],
                             frame[38:42])
        if op != b'\x00\x01' or tpa != self.server_ip:
            return None
        body = (b'\x00\x01\x08\x00\x06\x04\x00\x02' + SERVER_MAC +
                self.server_ip + sha + spa)
        return lambda: src_mac + SERVER_MAC + b'\x08\x06' + body

    def ntp(self, frame, src_mac, received):
        ihl = (frame[14] & 0x0f) * 4
        if frame[14] >> 4 != 4 or frame[23] != 17 or \
                frame[30:34] != self.server_ip:
            return None
        udp = 14 + ihl
        sport, dport = struct.unpack('!HH', frame[udp:udp + 4])
        req = frame[udp + 8:udp + 8 + 48]
        if dport != 123 or len(req) < 48 or req[0] & 7 != 3:
            return None
        guest_ip = frame[26:30]
        version = (req[0] >> 3) & 7

        def build():
            sent = self.now_ns()
            payload = (bytes([version << 3 | 4, 1, req[2], 0xec]) +
                       struct.pack('!II', 0, 1) + b'VMMC' +
                       ntp_time(received) + req[40:48] +
                       ntp_time(received) + ntp_time(sent))
            udp_part = struct.pack('!HHHH', 123, sport, 8 + len(payload),
                                   0) + payload
            ip = bytearray(struct.pack('!BBHHHBBH4s4s', 0x45, 0,
                                       20 + len(udp_part), 0, 0x4000, 64,
                                       17, 0, self.server_ip, guest_ip))
            ip[10:12] = struct.pack('!H', ip_checksum(bytes(ip)))
            return src_mac + SERVER_MAC + b'\x08\x00' + bytes(ip) + udp_part
        return build


if __name__ == '__main__':
    # Self-test: an NTP request frame in, a reply with the served time out
    net = NtpNet(lambda: time.time_ns() + 10 * NS)
    req = bytearray(48)
    req[0] = 4 << 3 | 3
    req[40:48] = ntp_time(time.time_ns())
    udp = struct.pack('!HHHH', 40000, 123, 56, 0) + bytes(req)
    ip = bytearray(struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0,
                               0, 64, 17, 0, socket.inet_aton(GUEST_IP),
                               net.server_ip))
    ip[10:12] = struct.pack('!H', ip_checksum(bytes(ip)))
    frame = (SERVER_MAC + bytes(6) + b'\x08\x00' + bytes(ip) + udp)
    reply = net.answer(frame, net.now_ns())()
    sec = struct.unpack('!I', reply[14 + 20 + 8 + 40:14 + 20 + 8 + 44])[0]
    got = sec - NTP_UNIX - time.time()
    assert 9 < got < 11, got
    assert ip_checksum(reply[14:34]) == 0
    print('ok: served time is host + %.1f s' % got)
