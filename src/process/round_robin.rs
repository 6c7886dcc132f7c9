//! Round-robin over a reuseport group: an eBPF program (`BPF_PROG_TYPE_SK_REUSEPORT`) that
//! hands each new connection to the next of the live sockets in turn, so that 64 keep-alive
//! clients over 4 instances are 16 each, not the 8 to 30 a hash of the client's port gave.
//!
//! Each steering builds its own program and maps and attaches them to the group, which drops
//! the previous ones: a `SOCKMAP` holding the live sockets at 0..n, a one-entry array holding
//! the counter, and n in the program itself. A socket may sit in several sockmaps, so nothing
//! needs to be carried from one steering to the next, nor across `herder update`.
//!
//! Loading the program needs `CAP_BPF` (the daemon running as root, as a system service) and
//! Linux 5.10 (sockets chosen from a sockmap); where either is missing [`steer`] says why and
//! the caller falls back to the classic BPF hash.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_PROG_LOAD: i32 = 5;
const MAP_TYPE_ARRAY: u32 = 2;
const MAP_TYPE_SOCKMAP: u32 = 15;
const PROG_TYPE_SK_REUSEPORT: u32 = 21;
const FN_MAP_LOOKUP_ELEM: i32 = 1;
const FN_SK_SELECT_REUSEPORT: i32 = 82;
const SO_ATTACH_REUSEPORT_EBPF: i32 = 52;
/// `SK_PASS`: the connection is taken (by the socket chosen, else by the kernel's hash).
const SK_PASS: i32 = 1;
/// The most sockets one program turns over (a sockmap's entries cost kernel memory).
pub const MAX: usize = 4096;

/// One eBPF instruction, as the kernel reads it.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    /// dst in the low four bits, src in the high four.
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: dst | (src << 4), off, imm }
}

// The opcodes the program uses (classes, sizes, modes and operations of linux/bpf.h).
const ALU64_MOV_K: u8 = 0x07 | 0xb0;
const ALU64_MOV_X: u8 = 0x07 | 0xb0 | 0x08;
const ALU64_ADD_K: u8 = 0x07;
const ALU_MOD_K: u8 = 0x04 | 0x90;
const ST_W_MEM: u8 = 0x62;
const STX_W_MEM: u8 = 0x63;
const STX_W_ATOMIC: u8 = 0x63 | 0xc0;
const LDX_W_MEM: u8 = 0x61;
const LD_DW_IMM: u8 = 0x18;
const JEQ_K: u8 = 0x05 | 0x10;
const CALL: u8 = 0x05 | 0x80;
const EXIT: u8 = 0x05 | 0x90;
const ATOMIC_FETCH_ADD: i32 = 0x01;
const PSEUDO_MAP_FD: u8 = 1;
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R6: u8 = 6;
const R10: u8 = 10;

/// The instructions that load map `fd` into `reg` (a 64-bit immediate in two slots).
fn load_map(reg: u8, fd: &OwnedFd) -> [Insn; 2] {
    [insn(LD_DW_IMM, reg, PSEUDO_MAP_FD, 0, fd.as_raw_fd()), insn(0, 0, 0, 0, 0)]
}

/// The program: take the counter (atomically where the kernel can), and pick the socket at
/// counter mod `n` in `sockets`.
fn program(counter: &OwnedFd, sockets: &OwnedFd, n: u32, atomic: bool) -> Vec<Insn> {
    let mut p = vec![
        insn(ALU64_MOV_X, R6, R1, 0, 0), // r6 = the context
        insn(ST_W_MEM, R10, 0, -4, 0),   // key 0 on the stack
        insn(ALU64_MOV_X, R2, R10, 0, 0),
        insn(ALU64_ADD_K, R2, 0, 0, -4),
    ];
    p.extend(load_map(R1, counter));
    p.push(insn(CALL, 0, 0, 0, FN_MAP_LOOKUP_ELEM));
    let to_pass = p.len();
    p.push(insn(JEQ_K, R0, 0, 0, 0)); // no counter: the kernel's hash (offset set below)
    if atomic {
        p.push(insn(ALU64_MOV_K, R1, 0, 0, 1));
        p.push(insn(STX_W_ATOMIC, R0, R1, 0, ATOMIC_FETCH_ADD)); // r1 = counter++
    } else {
        p.push(insn(LDX_W_MEM, R1, R0, 0, 0));
        p.push(insn(ALU64_MOV_X, R2, R1, 0, 0));
        p.push(insn(ALU64_ADD_K, R2, 0, 0, 1));
        p.push(insn(STX_W_MEM, R0, R2, 0, 0));
    }
    p.push(insn(ALU_MOD_K, R1, 0, 0, n.max(1) as i32));
    p.push(insn(STX_W_MEM, R10, R1, -8, 0)); // the index, as the key
    p.push(insn(ALU64_MOV_X, R1, R6, 0, 0));
    p.extend(load_map(R2, sockets));
    p.push(insn(ALU64_MOV_X, R3, R10, 0, 0));
    p.push(insn(ALU64_ADD_K, R3, 0, 0, -8));
    p.push(insn(ALU64_MOV_K, R4, 0, 0, 0));
    p.push(insn(CALL, 0, 0, 0, FN_SK_SELECT_REUSEPORT));
    let pass = p.len();
    p[to_pass].off = (pass - to_pass - 1) as i16;
    p.push(insn(ALU64_MOV_K, R0, 0, 0, SK_PASS));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// `bpf(2)` with an attribute block of 128 bytes (the fields past those a command reads are
/// zero, as the kernel requires).
fn bpf(cmd: i32, attr: &mut [u8; 128]) -> io::Result<i64> {
    // SAFETY: bpf(2) reads (and for some commands writes) the block of the size given.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

fn put32(attr: &mut [u8; 128], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(attr: &mut [u8; 128], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: a descriptor bpf(2) just returned, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn map_create(kind: u32, value_size: u32, entries: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, kind);
    put32(&mut attr, 4, 4);
    put32(&mut attr, 8, value_size);
    put32(&mut attr, 12, entries);
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}

fn map_update(map: &OwnedFd, key: u32, value: u32) -> io::Result<()> {
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, map.as_raw_fd() as u32);
    put64(&mut attr, 8, (&key as *const u32) as u64);
    put64(&mut attr, 16, (&value as *const u32) as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

fn load(insns: &[Insn]) -> io::Result<OwnedFd> {
    const LICENSE: &[u8] = b"Dual MIT/GPL\0";
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, PROG_TYPE_SK_REUSEPORT);
    put32(&mut attr, 4, insns.len() as u32);
    put64(&mut attr, 8, insns.as_ptr() as u64);
    put64(&mut attr, 16, LICENSE.as_ptr() as u64);
    attr[48..48 + 14].copy_from_slice(b"herder_rrobin\0");
    bpf(BPF_PROG_LOAD, &mut attr).map(owned)
}

/// Hand new connections to `live` in turn (at most [`MAX`]), through the program attached to
/// the group of `group` (any socket of it); `live` must be sockets of that group.
pub fn steer(group: &OwnedFd, live: &[&OwnedFd]) -> io::Result<()> {
    if live.is_empty() || live.len() > MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} sockets", live.len())));
    }
    let counter = map_create(MAP_TYPE_ARRAY, 4, 1)?;
    let sockets = map_create(MAP_TYPE_SOCKMAP, 4, live.len() as u32)?;
    for (i, fd) in live.iter().enumerate() {
        map_update(&sockets, i as u32, fd.as_raw_fd() as u32)?;
    }
    let n = live.len() as u32;
    // Atomic fetch-and-add needs Linux 5.12; before it, two connections on two CPUs at the
    // same instant may take the same turn.
    let prog = load(&program(&counter, &sockets, n, true))
        .or_else(|_| load(&program(&counter, &sockets, n, false)))?;
    // The group keeps the program (and it its maps) once attached: the descriptors here may
    // close.
    super::listen::set_int(group, libc::SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, prog.as_raw_fd())
}
