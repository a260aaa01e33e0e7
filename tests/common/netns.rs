//! Network namespaces a test creates itself, for "another host" and for
//! addresses that must never be reached for real (10.0.0.1,
//! 169.254.169.254): inside a namespace they exist only on its own loopback,
//! so nothing ever leaves the machine. Needs root (CI runs as root) and
//! `ip` (iproute2). Every namespace is deleted when its value is dropped.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("`ip` (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One network namespace with its loopback up.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// A new namespace (named after `tag`, this process and a counter).
    pub fn new(tag: &str) -> NetNs {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("cg-{tag}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (for `ip -n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds `addr` (CIDR) to the namespace's loopback: an address that then
    /// exists only inside it.
    pub fn add_loopback_address(&self, addr: &str) {
        ip(&["-n", &self.name, "addr", "add", addr, "dev", "lo"]);
    }

    /// Gives processes started with [`NetNs::command`] their own
    /// `/etc/hosts` (`ip netns exec` mounts `/etc/netns/NAME/hosts` over it).
    pub fn hosts_file(&self, lines: &str) {
        let dir = PathBuf::from("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), lines).unwrap();
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `f` on a thread inside the namespace: every socket it opens
    /// belongs to the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("namespace file");
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this (new, test-only) thread with a valid namespace fd.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the thread in the namespace panicked")
    }
}

impl NetNs {
    /// Non-blocking TCP listeners on `addrs` inside the namespace (they stay
    /// there), to see whether anything tries to connect.
    pub fn listeners(&self, addrs: &[&'static str]) -> Vec<TcpListener> {
        let addrs = addrs.to_vec();
        self.run(move || {
            addrs
                .iter()
                .map(|a| {
                    let l = TcpListener::bind(a).expect("listener in the namespace");
                    l.set_nonblocking(true).unwrap();
                    l
                })
                .collect()
        })
    }
}

/// Whether nothing has connected to `listener` (one from [`NetNs::listeners`]).
pub fn untouched(listener: &TcpListener) -> bool {
    matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
    }
}

/// Two namespaces joined by a veth pair: two hosts on a /30 of the
/// documentation range 192.0.2.0/24 (never routed anywhere).
#[derive(Debug)]
pub struct Pair {
    /// The first host (address [`Pair::A`]).
    pub a: NetNs,
    /// The second host (address [`Pair::B`]).
    pub b: NetNs,
    /// The first host's end of the link.
    link_a: String,
}

impl Pair {
    /// The first host's address.
    pub const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    /// The second host's address.
    pub const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

    /// Creates both namespaces and the link between them.
    pub fn new(tag: &str) -> Pair {
        let a = NetNs::new(&format!("{tag}a"));
        let b = NetNs::new(&format!("{tag}b"));
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Interface names: at most 15 bytes.
        let (va, vb) = (format!("cga{n}"), format!("cgb{n}"));
        ip(&[
            "-n",
            a.name(),
            "link",
            "add",
            &va,
            "type",
            "veth",
            "peer",
            "name",
            &vb,
            "netns",
            b.name(),
        ]);
        ip(&[
            "-n",
            a.name(),
            "addr",
            "add",
            &format!("{}/30", Pair::A),
            "dev",
            &va,
        ]);
        ip(&[
            "-n",
            b.name(),
            "addr",
            "add",
            &format!("{}/30", Pair::B),
            "dev",
            &vb,
        ]);
        ip(&["-n", a.name(), "link", "set", &va, "up"]);
        ip(&["-n", b.name(), "link", "set", &vb, "up"]);
        Pair { a, b, link_a: va }
    }

    /// Limits what the first host sends to the second to `kbit` kbit/s
    /// through a queue (a token bucket holding up to 300 ms, as a slow link
    /// does), not a policer; replaces any limit set before.
    pub fn limit_a_to_b(&self, kbit: u32) {
        self.unlimit_a_to_b();
        let rate = format!("{kbit}kbit");
        let out = Command::new("tc")
            .args([
                "-n",
                self.a.name(),
                "qdisc",
                "add",
                "dev",
                &self.link_a,
                "root",
                "tbf",
            ])
            .args(["rate", &rate, "burst", "16kb", "latency", "300ms"])
            .output()
            .expect("`tc` (iproute2) runs");
        assert!(
            out.status.success(),
            "tc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Lifts the limit of [`Pair::limit_a_to_b`].
    pub fn unlimit_a_to_b(&self) {
        let _ = Command::new("tc")
            .args([
                "-n",
                self.a.name(),
                "qdisc",
                "del",
                "dev",
                &self.link_a,
                "root",
            ])
            .output();
    }
}

/// A UDP socket bound to `addr` inside the namespace `name` (it stays
/// there whichever thread uses it).
pub fn udp_socket_in(
    name: &str,
    addr: std::net::SocketAddr,
) -> std::io::Result<std::net::UdpSocket> {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this (new, short-lived) thread with a valid namespace fd.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        std::net::UdpSocket::bind(addr)
    })
    .join()
    .map_err(|_| std::io::Error::other("the socket thread panicked"))?
}
