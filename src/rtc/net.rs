//! The media UDP socket: one socket for every session, IPv4, IPv6, or both.
//!
//! Bound to `[::]` it is dual-stack (`IPV6_V6ONLY` off): IPv4 peers arrive
//! as IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`), which ICE would not
//! match against their IPv4 candidates. So addresses are shown to the rest of
//! the engine in their plain form, and mapped back when sending.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

/// The shared media socket.
#[derive(Debug)]
pub struct MediaSocket {
    socket: UdpSocket,
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
        let socket = UdpSocket::from_std(socket.into())?;
        Ok(MediaSocket {
            socket,
            v6: addr.is_ipv6(),
        })
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

    /// Sends without waiting (a full socket buffer is an error: the caller
    /// counts the drop).
    pub fn try_send_to(&self, data: &[u8], dest: SocketAddr) -> io::Result<usize> {
        self.socket.try_send_to(data, self.on_wire(dest))
    }

    fn on_wire(&self, dest: SocketAddr) -> SocketAddr {
        match (self.v6, dest.ip()) {
            (true, IpAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), dest.port()),
            _ => dest,
        }
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
            media.try_send_to(b"pong", source).unwrap();
            let (n, _) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"pong");
        }
    }
}
