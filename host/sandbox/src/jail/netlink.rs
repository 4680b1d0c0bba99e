//! The few rtnetlink requests a jail's network is made of, sent by the
//! host itself: an `ip` process costs 5–15 ms and a `private` jail took
//! nine of them, a request well under one.
//!
//! A socket works in the network namespace of the thread that opened it:
//! [`in_netns`] opens one inside a jail's.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `VETH_INFO_PEER` (linux/veth.h): a veth's peer, as a link request.
const VETH_INFO_PEER: u16 = 1;
/// The loopback interface's index, in every network namespace.
pub(super) const LOOPBACK: u32 = 1;

/// A route netlink socket, in the namespace it was opened in.
pub(super) struct Netlink {
    socket: OwnedFd,
    sequence: u32,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub(super) fn open() -> io::Result<Netlink> {
        // SAFETY: socket has no memory-safety preconditions.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink {
            // SAFETY: `fd` was just opened and is owned by nobody else.
            socket: unsafe { OwnedFd::from_raw_fd(fd) },
            sequence: 0,
        })
    }

    /// Creates a veth pair: `name` here, `peer` in the namespace behind
    /// `netns`.
    pub(super) fn add_veth(&mut self, name: &str, peer: &str, netns: RawFd) -> io::Result<()> {
        let mut body = link_header(0, 0);
        attr(&mut body, libc::IFLA_IFNAME, &c_name(name));
        nested(&mut body, libc::IFLA_LINKINFO, |info| {
            attr(info, libc::IFLA_INFO_KIND, b"veth");
            nested(info, libc::IFLA_INFO_DATA, |data| {
                nested(data, VETH_INFO_PEER, |peer_link| {
                    peer_link.extend(link_header(0, 0));
                    attr(peer_link, libc::IFLA_IFNAME, &c_name(peer));
                    attr(peer_link, libc::IFLA_NET_NS_FD, &netns.to_ne_bytes());
                });
            });
        });
        self.request(libc::RTM_NEWLINK, CREATE, &body)
    }

    /// Removes the link `name` (a veth's peer goes with it).
    pub(super) fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut body = link_header(0, 0);
        attr(&mut body, libc::IFLA_IFNAME, &c_name(name));
        self.request(libc::RTM_DELLINK, 0, &body)
    }

    /// Sets the link at `index` up.
    pub(super) fn set_up(&mut self, index: u32) -> io::Result<()> {
        let up = libc::IFF_UP as u32;
        self.request(libc::RTM_NEWLINK, 0, &link_header(index, up))
    }

    /// Adds `address/prefix` to the link at `index`.
    pub(super) fn add_address(
        &mut self,
        index: u32,
        address: IpAddr,
        prefix: u8,
    ) -> io::Result<()> {
        let (family, octets) = family_and_octets(address);
        let mut body = vec![family, prefix, 0, libc::RT_SCOPE_UNIVERSE];
        body.extend(index.to_ne_bytes());
        attr(&mut body, libc::IFA_LOCAL, &octets);
        attr(&mut body, libc::IFA_ADDRESS, &octets);
        self.request(libc::RTM_NEWADDR, CREATE, &body)
    }

    /// Adds the default route, through `gateway`.
    pub(super) fn add_default_route(&mut self, gateway: IpAddr) -> io::Result<()> {
        let (family, octets) = family_and_octets(gateway);
        let mut body = vec![
            family,
            0, // destination prefix: everything
            0,
            0,
            libc::RT_TABLE_MAIN,
            libc::RTPROT_BOOT,
            libc::RT_SCOPE_UNIVERSE,
            libc::RTN_UNICAST,
        ];
        body.extend(0u32.to_ne_bytes());
        attr(&mut body, libc::RTA_GATEWAY, &octets);
        self.request(libc::RTM_NEWROUTE, CREATE, &body)
    }

    /// Sends one request and waits for the kernel's answer to it.
    fn request(&mut self, kind: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        self.sequence += 1;
        let length = u32::try_from(HEADER + body.len()).map_err(io::Error::other)?;
        let flags = flags | (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        let mut message = Vec::with_capacity(HEADER + body.len());
        message.extend(length.to_ne_bytes());
        message.extend(kind.to_ne_bytes());
        message.extend(flags.to_ne_bytes());
        message.extend(self.sequence.to_ne_bytes());
        message.extend(0u32.to_ne_bytes());
        message.extend(body);
        // SAFETY: the buffer is valid for its length; the kernel is the
        // default destination of a netlink socket.
        let sent = unsafe {
            libc::send(
                self.socket.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut answer = [0u8; 1024];
        loop {
            // SAFETY: the buffer is valid for its length.
            let read = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    answer.as_mut_ptr().cast(),
                    answer.len(),
                    0,
                )
            };
            if read < 0 {
                return Err(io::Error::last_os_error());
            }
            let answer = &answer[..read as usize];
            let word = |at: usize| -> Option<[u8; 4]> { answer.get(at..at + 4)?.try_into().ok() };
            let (Some(kind), Some(sequence), Some(error)) = (word(4), word(8), word(HEADER)) else {
                return Err(io::Error::other("a short netlink answer"));
            };
            let kind = u16::from_ne_bytes([kind[0], kind[1]]);
            if u32::from_ne_bytes(sequence) != self.sequence || kind != libc::NLMSG_ERROR as u16 {
                continue;
            }
            return match i32::from_ne_bytes(error) {
                0 => Ok(()),
                error => Err(io::Error::from_raw_os_error(-error)),
            };
        }
    }
}

/// `nlmsghdr`'s size.
const HEADER: usize = 16;
/// A new object, refused if it exists.
const CREATE: u16 = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;

/// Runs `work` with a socket in the network namespace behind `netns`, on a
/// thread of its own (joining a namespace changes only the joining
/// thread, which then ends).
pub(super) fn in_netns<T: Send + 'static>(
    netns: RawFd,
    work: impl FnOnce(&mut Netlink) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    std::thread::spawn(move || {
        super::net::join(netns)?;
        work(&mut Netlink::open()?)
    })
    .join()
    .map_err(|_| io::Error::other("the netlink thread panicked"))?
}

/// `ifinfomsg` for the link at `index` (0: named by an attribute), with
/// `flags` set (and only those changed).
fn link_header(index: u32, flags: u32) -> Vec<u8> {
    let mut header = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    header.extend(index.to_ne_bytes());
    header.extend(flags.to_ne_bytes());
    header.extend(flags.to_ne_bytes());
    header
}

fn family_and_octets(address: IpAddr) -> (u8, Vec<u8>) {
    match address {
        IpAddr::V4(v4) => (libc::AF_INET as u8, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6 as u8, v6.octets().to_vec()),
    }
}

fn c_name(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

/// Appends the attribute `kind` holding `data`, padded to four bytes.
fn attr(buffer: &mut Vec<u8>, kind: u16, data: &[u8]) {
    buffer.extend(((4 + data.len()) as u16).to_ne_bytes());
    buffer.extend(kind.to_ne_bytes());
    buffer.extend(data);
    pad(buffer);
}

/// Appends the attribute `kind` holding what `fill` appends.
fn nested(buffer: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buffer.len();
    buffer.extend([0, 0]);
    buffer.extend(kind.to_ne_bytes());
    fill(buffer);
    let length = (buffer.len() - start) as u16;
    buffer[start..start + 2].copy_from_slice(&length.to_ne_bytes());
    pad(buffer);
}

fn pad(buffer: &mut Vec<u8>) {
    buffer.resize(buffer.len().next_multiple_of(4), 0);
}
