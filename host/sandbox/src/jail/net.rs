//! A jail's network: a network namespace of the run's own, made by the
//! host (held open by a descriptor, so a crash leaves no namespace
//! behind), whose only ways out are:
//! - **forwarders** on its loopback, one per configured registry and
//!   port: a registry named by address is reached at that address (added
//!   to the jail's loopback), one named by host name at a loopback
//!   address of its own that the jail's `/etc/hosts` gives the name. The
//!   host connects each accepted connection to the registry, nothing else;
//! - with `private`, an **uplink**: a veth pair, `hxjN` on the host, with
//!   a /30 of [`UPLINK_NET`], NAT to the world. The host rejects every
//!   packet from an uplink addressed to itself (any of its addresses),
//!   to link-local addresses (cloud metadata) and to another jail.
//!
//! The build steps' CNI bridge (`helix0`) is made by the build tool inside
//! the namespace, with its leases in the jail's tmpfs `/var` and its NAT
//! rules in the namespace's tables, so all of it goes with the jail; the
//! jail rejects what its steps send to its own addresses (the
//! forwarders).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use tokio::sync::OnceCell;

use super::netlink::{self, Netlink};
use crate::network::BuildNetwork;

/// The addresses uplinks take: a /30 each, the host's end first.
const UPLINK_NET: &str = "10.214.0.0/16";
/// How many /30s [`UPLINK_NET`] holds.
const UPLINKS: u32 = 1 << 14;
/// Where uplinks are claimed, one file per uplink holding the claiming
/// server's process id, so concurrent servers never take the same one
/// and a crashed server's are found.
const UPLINK_CLAIMS: &str = "/run/helix-jail/uplinks";
/// The host's chain for uplink traffic in `filter`'s INPUT and FORWARD.
const CHAIN: &str = "HELIX-JAIL";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("all {UPLINKS} uplinks of {UPLINK_NET} are in use")]
    NoUplink,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Io { what, source }
}

/// A run's network namespace and what reaches out of it.
pub(super) struct JailNet {
    netns: OwnedFd,
    /// Registry names the jail's `/etc/hosts` resolves, and to what.
    hosts: Vec<(String, IpAddr)>,
    /// The registries forwarded into it.
    registries: Vec<String>,
    forwarders: Vec<tokio::task::JoinHandle<()>>,
    uplink: Option<Uplink>,
}

impl JailNet {
    /// The network of a jail in `netns` (a new one when `None`).
    pub(super) async fn create(
        network: BuildNetwork,
        registries: &[String],
        netns: Option<OwnedFd>,
    ) -> Result<JailNet, NetError> {
        let netns = match netns {
            Some(netns) => netns,
            None => new_netns()?,
        };
        // The rule for the steps' bridge is one process; the rest is made
        // while it runs.
        let bridge_rule = (network == BuildNetwork::Private).then(|| {
            // The steps' bridge may reach out, never the jail itself.
            in_netns_command(
                netns.as_raw_fd(),
                &[
                    "iptables", "-w", "-A", "INPUT", "-i", "helix0", "-j", "REJECT",
                ],
            )
        });
        let mut net = JailNet {
            netns,
            hosts: Vec::new(),
            registries: registries.to_vec(),
            forwarders: Vec::new(),
            uplink: None,
        };
        netlink::in_netns(net.fd(), |netlink| {
            netlink.set_up(netlink::LOOPBACK)?;
            // Nothing reaches the host over IPv6 link-local addresses
            // either (this thread's namespace is the jail's).
            std::fs::write("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1")
        })
        .map_err(io("cannot set up the jail's loopback"))?;
        if network == BuildNetwork::Private {
            net.uplink = Some(Uplink::create(&net).await?);
        }
        if let Some(rule) = bridge_rule {
            rule.await?;
        }
        for (index, registry) in registries.iter().enumerate() {
            net.forward(index, registry)?;
        }
        Ok(net)
    }

    pub(super) fn fd(&self) -> RawFd {
        self.netns.as_raw_fd()
    }

    pub(super) fn describe(&self) -> String {
        let registries = match self.registries.is_empty() {
            true => "no registry".to_string(),
            false => format!("the registries {}", self.registries.join(", ")),
        };
        match &self.uplink {
            Some(uplink) => format!(
                "{registries} through the host, the world (no host address) through uplink {}",
                uplink.interface
            ),
            None => format!("{registries} through the host, nothing else"),
        }
    }

    pub(super) fn hosts(&self) -> Vec<(String, IpAddr)> {
        self.hosts.clone()
    }

    /// Forwards `registry` (`host[:port][/path]`) into the jail.
    fn forward(&mut self, index: usize, registry: &str) -> Result<(), NetError> {
        let authority = registry.split('/').next().unwrap_or(registry);
        let (host, port) = split_port(authority);
        let ports: Vec<u16> = match port {
            Some(port) => vec![port],
            // TLS first, plain HTTP for an insecure one, as the tools try.
            None => vec![443, 80],
        };
        let inside = match host.parse::<IpAddr>() {
            Ok(address) => {
                if !address.is_loopback() {
                    let prefix = if address.is_ipv4() { 32 } else { 128 };
                    netlink::in_netns(self.fd(), move |netlink| {
                        netlink.add_address(netlink::LOOPBACK, address, prefix)
                    })
                    .map_err(io(format!("cannot add {address} to the jail's loopback")))?;
                }
                address
            }
            Err(_) => {
                let octet = u8::try_from(10 + index).map_err(|_| NetError::Io {
                    what: "too many registries".into(),
                    source: std::io::Error::other("at most 240"),
                })?;
                let address = IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet));
                self.hosts.push((host.to_string(), address));
                address
            }
        };
        for port in ports {
            let listener = listen_in(self.fd(), SocketAddr::new(inside, port))?;
            let upstream = (host.to_string(), port);
            self.forwarders
                .push(tokio::spawn(forward(listener, upstream)));
        }
        Ok(())
    }
}

impl Drop for JailNet {
    fn drop(&mut self) {
        for forwarder in &self.forwarders {
            forwarder.abort();
        }
    }
}

/// `host:port`, `[v6]:port`, or a bare host.
fn split_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => (host, port.parse().ok()),
        _ => (authority, None),
    }
}

/// Joins the network namespace behind `fd`; for a forked child or a
/// thread of its own.
pub(super) fn join(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: setns has no memory-safety preconditions.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A new network namespace, held by the returned descriptor. Made on a
/// thread of its own, which then ends: the server stays where it is.
fn new_netns() -> Result<OwnedFd, NetError> {
    std::thread::spawn(|| {
        // SAFETY: unshare has no memory-safety preconditions; it changes
        // only this thread, which ends below.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from(std::fs::File::open(
            "/proc/thread-self/ns/net",
        )?))
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))
    .and_then(|made| made)
    .map_err(io("cannot make a network namespace"))
}

/// A listening socket at `address` inside the namespace behind `fd`.
fn listen_in(fd: RawFd, address: SocketAddr) -> Result<tokio::net::TcpListener, NetError> {
    let listener = std::thread::spawn(move || {
        join(fd)?;
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(listener)
    })
    .join()
    .map_err(|_| std::io::Error::other("the listening thread panicked"))
    .and_then(|made| made)
    .map_err(io(format!("cannot listen on {address} in the jail")))?;
    tokio::net::TcpListener::from_std(listener).map_err(io("cannot use the forwarder"))
}

/// Connects every connection to `listener` to `upstream`, from the host.
async fn forward(listener: tokio::net::TcpListener, upstream: (String, u16)) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

async fn run_checked(
    mut process: tokio::process::Command,
    command: &[&str],
) -> Result<(), NetError> {
    let output = process
        .output()
        .await
        .map_err(io(format!("cannot run {}", command[0])))?;
    if output.status.success() {
        return Ok(());
    }
    Err(NetError::Command {
        command: command.join(" "),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

async fn run_on_host(command: &[&str]) -> Result<(), NetError> {
    let mut process = tokio::process::Command::new(command[0]);
    process.args(&command[1..]);
    run_checked(process, command).await
}

/// `command`, started now inside the namespace behind `netns`; the
/// returned future waits for it.
fn in_netns_command(
    netns: RawFd,
    command: &[&str],
) -> impl Future<Output = Result<(), NetError>> + use<> {
    let mut process = tokio::process::Command::new(command[0]);
    process.args(&command[1..]);
    // SAFETY: setns is async-signal-safe; the descriptor is open.
    unsafe {
        process.pre_exec(move || join(netns));
    }
    let command: Vec<String> = command.iter().map(|c| c.to_string()).collect();
    let output = process.output();
    async move {
        let output = output
            .await
            .map_err(io(format!("cannot run {}", command[0])))?;
        match output.status.success() {
            true => Ok(()),
            false => Err(NetError::Command {
                command: command.join(" "),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            }),
        }
    }
}

/// A jail's way to the world: one end of a veth pair in the jail, the
/// other on the host.
struct Uplink {
    /// The host's end.
    interface: String,
    claim: PathBuf,
}

impl Uplink {
    async fn create(net: &JailNet) -> Result<Uplink, NetError> {
        static HOST_RULES: OnceCell<()> = OnceCell::const_new();
        HOST_RULES.get_or_try_init(host_rules).await?;
        let (index, claim) = claim_uplink()?;
        let name = interface(index);
        let uplink = Uplink {
            interface: name.clone(),
            claim,
        };
        let (host_end, jail_end) = addresses(index);
        let mut host = Netlink::open().map_err(io("cannot open a netlink socket"))?;
        host.add_veth(&name, "eth0", net.fd())
            .map_err(io(format!("cannot make the veth pair {name}")))?;
        std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1")
            .map_err(io(format!("cannot turn IPv6 off on {name}")))?;
        let host_index = index_of(&name)?;
        host.add_address(host_index, host_end.into(), 30)
            .and_then(|()| host.set_up(host_index))
            .map_err(io(format!("cannot set up {name}")))?;
        netlink::in_netns(net.fd(), move |jail| {
            let eth0 = index_of("eth0").map_err(std::io::Error::other)?;
            jail.add_address(eth0, jail_end.into(), 30)?;
            jail.set_up(eth0)?;
            jail.add_default_route(host_end.into())
        })
        .map_err(io(format!("cannot set up the jail's end of {name}")))?;
        Ok(uplink)
    }
}

/// The index of the link `name` in the calling thread's namespace.
fn index_of(name: &str) -> Result<u32, NetError> {
    let c_name = std::ffi::CString::new(name).map_err(|e| io(name)(std::io::Error::other(e)))?;
    // SAFETY: `c_name` is a valid C string.
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => Err(io(format!("no link {name}"))(
            std::io::Error::last_os_error(),
        )),
        index => Ok(index),
    }
}

impl Drop for Uplink {
    /// Removes the pair now (the kernel would remove it with the
    /// namespace, but only once the last socket in it is gone), then the
    /// claim.
    fn drop(&mut self) {
        let _ = Netlink::open().and_then(|mut host| host.delete_link(&self.interface));
        let _ = std::fs::remove_file(&self.claim);
    }
}

fn interface(index: u32) -> String {
    format!("hxj{index}")
}

/// The host's and the jail's address of uplink `index`.
fn addresses(index: u32) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(Ipv4Addr::new(10, 214, 0, 0)) + index * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

fn claim_uplink() -> Result<(u32, PathBuf), NetError> {
    use std::io::Write as _;
    let dir = Path::new(UPLINK_CLAIMS);
    std::fs::create_dir_all(dir).map_err(io(format!("cannot create {UPLINK_CLAIMS}")))?;
    let start = std::process::id().wrapping_mul(2654435761) % UPLINKS;
    for offset in 0..UPLINKS {
        let index = (start + offset) % UPLINKS;
        let claim = dir.join(index.to_string());
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&claim)
        {
            Ok(mut file) => {
                file.write_all(std::process::id().to_string().as_bytes())
                    .map_err(io("cannot claim an uplink"))?;
                return Ok((index, claim));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io("cannot claim an uplink")(e)),
        }
    }
    Err(NetError::NoUplink)
}

/// Releases the uplinks of servers that are gone (a crash): their claims,
/// and the host end of a pair whose jail somehow outlived them. The
/// number released.
pub fn sweep_uplinks() -> usize {
    let Ok(claims) = std::fs::read_dir(UPLINK_CLAIMS) else {
        return 0;
    };
    let mut released = 0;
    for claim in claims.flatten() {
        let owner = std::fs::read_to_string(claim.path()).unwrap_or_default();
        let alive = owner
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if alive {
            continue;
        }
        if let Some(index) = claim.file_name().to_str().and_then(|n| n.parse().ok()) {
            let _ = Netlink::open().and_then(|mut host| host.delete_link(&interface(index)));
        }
        if std::fs::remove_file(claim.path()).is_ok() {
            released += 1;
        }
    }
    released
}

/// The host's rules for uplinks, made once and kept (idempotent): IPv4
/// forwarding on, NAT for [`UPLINK_NET`], and [`CHAIN`], which rejects
/// what an uplink sends to the host itself, to link-local addresses and
/// to another uplink, and lets the rest (and its answers) through.
async fn host_rules() -> Result<(), NetError> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(io("cannot turn IPv4 forwarding on"))?;
    if run_on_host(&["iptables", "-w", "-n", "-L", CHAIN])
        .await
        .is_err()
    {
        run_on_host(&["iptables", "-w", "-N", CHAIN]).await?;
    }
    run_on_host(&["iptables", "-w", "-F", CHAIN]).await?;
    for rule in [
        vec!["-i", "hxj+", "-o", "hxj+", "-j", "REJECT"],
        vec!["-i", "hxj+", "-d", "169.254.0.0/16", "-j", "REJECT"],
        vec!["-i", "hxj+", "-j", "ACCEPT"],
        vec![
            "-o",
            "hxj+",
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ],
    ] {
        let mut args = vec!["iptables", "-w", "-A", CHAIN];
        args.extend(rule);
        run_on_host(&args).await?;
    }
    let input = ["INPUT", "-i", "hxj+", "-j", "REJECT"];
    let forward = ["FORWARD", "-j", CHAIN];
    let masquerade = [
        "POSTROUTING",
        "-s",
        UPLINK_NET,
        "!",
        "-o",
        "hxj+",
        "-j",
        "MASQUERADE",
    ];
    for (table, rule) in [
        ("filter", &input[..]),
        ("filter", &forward[..]),
        ("nat", &masquerade[..]),
    ] {
        let mut check = vec!["iptables", "-w", "-t", table, "-C"];
        check.extend(rule);
        if run_on_host(&check).await.is_err() {
            let mut insert = vec!["iptables", "-w", "-t", table, "-I"];
            insert.extend(rule);
            run_on_host(&insert).await?;
        }
    }
    Ok(())
}
