//! `tlsc --serve=PATH`: the helper autossl-shim starts once per user and TLS
//! configuration, so that an upgraded connection costs a fork of a process whose context
//! is built, not a new program.
//!
//! The story:
//! 1. the lock beside the socket (`PATH.lock`): one helper per socket, whoever started it;
//!    a second one exits 0 at once;
//! 2. the environment and the client context, once;
//! 3. the socket bound (0600, in a directory only the user can enter), a session of its
//!    own;
//! 4. each connection on the socket: its peer's uid checked (ours, or it is closed unread),
//!    one message read — `stls-helper/1`, the target descriptor numbers, then tlsc's
//!    arguments, each ended by NUL — with the descriptors it carries; a fork, in which the
//!    descriptors are put in place and the connection runs as `tlsc ARGS` would (the io
//!    form only), ended with the helper if the helper is killed;
//! 5. children reaped as they end; after `--serve-idle` with no connection and no child,
//!    the socket is removed, what is still queued is served, and the helper exits 0.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::io::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Instant;

use crate::Form;
use stls::child::Selfpipe;
use stls::env::Env;
use stls::exit::{self, Error};
use stls::log::{self, Log};
use stls::options::{self, Command, Options};
use stls::{fd, handoff, process};

/// The first entry of a message.
const MAGIC: &[u8] = b"stls-helper/1";

pub fn serve(cmd: &Command, opts: &Options) -> Result<i32, Error> {
    let Some(path) = opts.serve.clone() else {
        return Ok(0);
    };
    let dir = path.parent().unwrap_or(std::path::Path::new("/"));
    if !handoff::private_dir(dir) {
        return Err(Error::new(
            exit::CONFIG,
            format!(
                "{}: not a directory of this user's that nobody else can enter: not serving",
                dir.display()
            ),
        ));
    }
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".lock");
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| Error::sys("unable to open the helper's lock", e))?;
    if !handoff::try_lock(lock.as_raw_fd())
        .map_err(|e| Error::sys("unable to lock the helper's lock", e))?
    {
        return Ok(0);
    }
    let env = Env::from_process()?;
    process::init_openssl(env.openssl_conf);
    let ctx = crate::client_context(opts, &env)?;
    // What a handshake fetches, built once here rather than in every connection's process.
    process::warm_up_client(&ctx);
    let listener = handoff::listen(&path)
        .map_err(|e| Error::sys("unable to listen on the helper's socket", e))?;
    handoff::new_session();
    handoff::detach_stdio();
    let selfpipe = Selfpipe::install()?;
    // The helper's own descriptors, none of a connection's business.
    let own = [
        selfpipe.rfd,
        selfpipe.wfd,
        lock.as_raw_fd(),
        listener.as_raw_fd(),
    ];
    let mut children = 0usize;
    let mut last = Instant::now();
    let mut closing = false;
    loop {
        let mut p = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: selfpipe.rfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = match opts.serve_idle {
            Some(idle) if children == 0 => fd::poll_timeout(Some(last + idle)),
            _ => -1,
        };
        if closing {
            // Queued connections were sent before the socket went: serve them, then end.
            match handoff::accept(listener.as_raw_fd()) {
                Ok(Some(conn)) => {
                    children += hand_off(cmd, &env, &ctx, conn, own);
                    continue;
                }
                _ => return Ok(0),
            }
        }
        match fd::poll(&mut p, timeout) {
            Ok(0) => {
                let idle = opts.serve_idle.is_some_and(|d| last.elapsed() >= d);
                if idle && children == 0 {
                    // Nobody finds the socket from now on.
                    let _ = std::fs::remove_file(&path);
                    closing = true;
                }
                continue;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::sys("unable to wait for connections", e)),
        }
        if p[1].revents != 0 {
            let mut b = [0u8; 64];
            while matches!(fd::read(selfpipe.rfd, &mut b), Ok(n) if n == b.len()) {}
            children = children.saturating_sub(handoff::reap_children());
            last = Instant::now();
        }
        if p[0].revents != 0 {
            if let Ok(Some(conn)) = handoff::accept(listener.as_raw_fd()) {
                children += hand_off(cmd, &env, &ctx, conn, own);
                last = Instant::now();
            }
        }
    }
}

/// One connection of the socket: checked, read, and forked off. 1 when a child runs it.
/// `helpers`: the helper's own descriptors, none of the connection's business.
fn hand_off(
    cmd: &Command,
    env: &Env,
    ctx: &openssl::ssl::SslContext,
    conn: OwnedFd,
    helpers: [RawFd; 4],
) -> usize {
    if handoff::peer_uid(conn.as_raw_fd()).ok() != Some(handoff::euid()) {
        return 0;
    }
    let mut buf = vec![0u8; 4096];
    let Ok((n, fds)) = handoff::recv(conn.as_raw_fd(), &mut buf) else {
        return 0;
    };
    let Some((targets, args)) = parse(&buf[..n], fds.len()) else {
        return 0;
    };
    let helper = std::process::id();
    match handoff::fork() {
        Ok(Some(_)) => {
            // The sender keeps its descriptors until it hears that a process has them: a
            // helper that ends before this byte leaves the connection to the sender.
            let _ = fd::write(conn.as_raw_fd(), b"k");
            1
        }
        Ok(None) => {
            // The connection's process: nothing of the helper's but the context; it ends
            // with the helper, even one that ended before it could ask for that.
            handoff::end_with_parent(libc::SIGKILL);
            if handoff::parent_pid() != helper {
                handoff::exit_now(exit::SYSTEM);
            }
            process::keep_heap();
            handoff::default_signal(libc::SIGCHLD);
            for h in helpers {
                fd::close(h);
            }
            drop(conn);
            let code = run(cmd, env, ctx, fds, &targets, args);
            handoff::exit_now(code)
        }
        Err(_) => 0,
    }
}

/// `stls-helper/1\0T T T...\0ARG\0ARG\0...`: the target numbers (one a descriptor carried)
/// and tlsc's arguments.
fn parse(msg: &[u8], nfds: usize) -> Option<(Vec<RawFd>, Vec<OsString>)> {
    let mut parts = msg.strip_suffix(b"\0")?.split(|&b| b == 0);
    if parts.next()? != MAGIC {
        return None;
    }
    let targets: Vec<RawFd> = std::str::from_utf8(parts.next()?)
        .ok()?
        .split(' ')
        .map(|t| t.parse().ok().filter(|&n: &RawFd| (0..64).contains(&n)))
        .collect::<Option<_>>()?;
    if targets.len() != nfds {
        return None;
    }
    Some((
        targets,
        parts.map(|a| OsString::from_vec(a.to_vec())).collect(),
    ))
}

/// In the connection's process: the descriptors in place, the arguments read, then tlsc's
/// io form as `tlsc ARGS` runs it. The exit code.
fn run(
    cmd: &Command,
    env: &Env,
    ctx: &openssl::ssl::SslContext,
    fds: Vec<OwnedFd>,
    targets: &[RawFd],
    args: Vec<OsString>,
) -> i32 {
    let pairs: Vec<(RawFd, RawFd)> = fds
        .iter()
        .map(|f| f.as_raw_fd())
        .zip(targets.iter().copied())
        .collect();
    let placed = handoff::place(&pairs);
    for f in fds {
        if targets.contains(&f.as_raw_fd()) {
            let _ = f.into_raw_fd(); // now one of the targets: kept
        }
    }
    let r = placed
        .map_err(|e| Error::sys("unable to put the connection's descriptors in place", e))
        .and_then(|()| options::parse(cmd, &args))
        .and_then(|opts| {
            if !opts.operands.is_empty() || opts.serve.is_some() {
                return Err(Error::usage("a handed connection runs the io form only"));
            }
            Ok(opts)
        });
    let opts = match r {
        Ok(o) => o,
        Err(e) => return report(e),
    };
    let log = Log::new(cmd, &opts);
    let r = crate::with_notification(&opts, || {
        if opts.pending_connect {
            crate::watch_clear_side(opts.no_sandbox);
        }
        crate::connected(log, &opts, &Form::Io, env, ctx)
    });
    match r {
        Ok(c) => c,
        Err(e) => report(e),
    }
}

fn report(e: Error) -> i32 {
    let (word, shown) = log::failure_word();
    if shown {
        let _ = fd::write_all(2, format!("tlsc: {word}: {}\n", e.msg).as_bytes());
    }
    e.code
}
