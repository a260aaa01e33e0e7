//! The media UDP socket: one socket for every session, IPv4, IPv6, or both.
//!
//! Bound to `[::]` it is dual-stack (`IPV6_V6ONLY` off): IPv4 peers arrive
//! as IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`), which ICE would not
//! match against their IPv4 candidates. So addresses are shown to the rest of
//! the engine in their plain form, and mapped back when sending.
//!
//! Sends go through `quinn-udp`, which knows how to use UDP generic
//! segmentation offload (GSO): a run of equal-sized datagrams to one peer
//! (the packets of one video frame for one viewer) leaves in one system call
//! and one pass through the kernel's UDP stack. Where the kernel cannot do
//! GSO, it falls back to one datagram per call by itself.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The shared media socket.
#[derive(Debug)]
pub struct MediaSocket {
    socket: UdpSocket,
    state: quinn_udp::UdpSocketState,
    v6: bool,
}

impl MediaSocket {
    /// Binds `addr`; `[::]:PORT` takes IPv4 and IPv6 alike.
    pub fn bind(addr: SocketAddr) -> io::Result<MediaSocket> {
        let domain = socket2::Domain::for_address(addr);
        let socket =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        // quinn-udp turns receive offload (GRO) on; the router reads one
        // datagram per call and could not split coalesced ones.
        set_udp_gro(&socket, false)?;
        let socket = UdpSocket::from_std(socket.into())?;
        Ok(MediaSocket {
            socket,
            state,
            v6: addr.is_ipv6(),
        })
    }

    /// How many equal-sized datagrams one [`MediaSocket::try_send_segments`]
    /// may carry (1 when the kernel cannot segment).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives a datagram; the source in its plain form.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (n, source) = self.socket.recv_from(buf).await?;
        Ok((n, plain(source)))
    }

    /// Sends `contents` as datagrams of `segment` bytes each (the last may be
    /// shorter) to one peer, without waiting: a full socket buffer is an
    /// error and the caller counts the drop.
    pub fn try_send_segments(
        &self,
        contents: &[u8],
        segment: usize,
        dest: SocketAddr,
    ) -> io::Result<()> {
        let transmit = quinn_udp::Transmit {
            destination: self.on_wire(dest),
            ecn: None,
            contents,
            segment_size: (contents.len() > segment).then_some(segment),
            src_ip: None,
        };
        self.socket.try_io(Interest::WRITABLE, || {
            self.state.try_send((&self.socket).into(), &transmit)
        })
    }

    /// Waits until the reactor has seen the socket writable (tests send
    /// before anything else ran the reactor).
    #[cfg(test)]
    pub async fn writable(&self) -> io::Result<()> {
        self.socket.writable().await
    }

    fn on_wire(&self, dest: SocketAddr) -> SocketAddr {
        match (self.v6, dest.ip()) {
            (true, IpAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), dest.port()),
            _ => dest,
        }
    }
}

/// Turns the kernel's UDP receive coalescing on or off (Linux `UDP_GRO`).
fn set_udp_gro(socket: &socket2::Socket, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    /// `UDP_GRO` from `linux/udp.h` (not in the libc crate for every target).
    const UDP_GRO: libc::c_int = 104;
    let value: libc::c_int = on.into();
    // SAFETY: a valid socket descriptor and a c_int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            UDP_GRO,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    // Kernels without GRO for UDP (before 5.0) never turned it on.
    match e.raw_os_error() {
        Some(libc::ENOPROTOOPT) => Ok(()),
        _ => Err(e),
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it stands for.
pub fn plain(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(addr, |v4| SocketAddr::new(IpAddr::V4(v4), addr.port())),
        IpAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_shown_plain_and_mapped_back() {
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:5000".parse().unwrap();
        let plain_v4: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        assert_eq!(plain(mapped), plain_v4);
        let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        assert_eq!(plain(v6), v6);
    }

    #[tokio::test]
    async fn a_dual_stack_socket_talks_to_ipv4_and_ipv6_peers() {
        let Ok(media) = MediaSocket::bind("[::]:0".parse().unwrap()) else {
            eprintln!("no IPv6 on this machine: skipped");
            return;
        };
        let port = media.local_addr().unwrap().port();
        for peer_ip in ["127.0.0.1", "::1"] {
            let Ok(peer) = std::net::UdpSocket::bind((peer_ip, 0)) else {
                continue; // ::1 may be missing
            };
            let target: SocketAddr = (peer_ip.parse::<IpAddr>().unwrap(), port).into();
            peer.send_to(b"ping", target).unwrap();
            let mut buf = [0u8; 16];
            let (n, source) = media.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"ping");
            assert_eq!(source, peer.local_addr().unwrap(), "shown plain");
            media.try_send_segments(b"pong", 4, source).unwrap();
            let (n, _) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"pong");
        }
    }
}
