//! A reader for statmap files (format version 1, up to minor 1.2), written from
//! `docs/format.md` with no dependencies beyond `std`.
//!
//! Files are untrusted: every offset, length, count and alignment is checked
//! (sections 4.2, 5 and 9), and a problem is returned as [`ReadError::Corrupt`],
//! never a panic or an out-of-bounds read. Multi-word values are read with
//! the latch protocol of section 6, with bounded retries.
//!
//! Linux only (it calls `mmap` and `flock` through the C library).

use std::fmt;
use std::fs::File;
use std::os::raw::{c_int, c_void};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicU64, Ordering};

pub const MAJOR: u16 = 1;
pub const HEADER_SIZE: u64 = 256;

const MAGIC: u64 = 0x3150_414D_5441_5453; // "STATMAP1" little-endian
const MAGIC_SWAPPED: u64 = 0x5354_4154_4D41_5031; // "1PAMTATS": a big-endian writer
const H_STATE: usize = 16;
const H_CAPACITY: usize = 24;
const H_END: usize = 32;
const H_CLOSED_NS: usize = 104;
const R_HEADER: u64 = 40;
const MAX_RECORD: u64 = 16 << 20;
const MAX_PARAMS: u32 = 4096;
const MAX_STRINGS: u32 = 4096;
const MAX_STRING: u32 = 65535;
const MAX_TEXT: u32 = 1 << 20;
const FAST_TRIES: u32 = 10_000;
const YIELDS: u32 = 100;

pub const COUNTER: u16 = 1;
pub const GAUGE: u16 = 2;
pub const HISTOGRAM: u16 = 3;
pub const SUMMARY: u16 = 4;
pub const TEXT: u16 = 5;
pub const INFO: u16 = 6;
pub const ENUM: u16 = 7;
/// Since 1.2 (docs/format.md section 14). Type 8 (knobs, 1.1) is skipped.
pub const EXP_HISTOGRAM: u16 = 9;
/// Since 1.2 (section 15): not a metric; the latest exemplar of a counter or histogram bucket.
pub const EXEMPLAR: u16 = 10;
const EXP_HEAD: u64 = 10;
const EXP_MAX_BUCKETS: u32 = 2048;
const EXP_MIN_SCALE: i64 = -4;
const EXP_MAX_SCALE: i64 = 20;
pub const FLAG_FLOAT: u16 = 1;
pub const FLAG_LOG_BUCKETS: u16 = 2;

pub fn type_name(t: u16) -> &'static str {
    match t {
        COUNTER => "counter",
        GAUGE => "gauge",
        HISTOGRAM => "histogram",
        SUMMARY => "summary",
        TEXT => "text",
        INFO => "info",
        ENUM => "enum",
        EXP_HISTOGRAM => "exphistogram",
        EXEMPLAR => "exemplar",
        _ => "unknown",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// Still being created (too short, magic zero, or state 0): skip it.
    NotReady,
    /// The file breaks the format; the message names the problem.
    Corrupt(String),
    /// Cannot open, stat or map.
    Io(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::NotReady => write!(f, "not ready"),
            ReadError::Corrupt(m) => write!(f, "{}", m),
            ReadError::Io(m) => write!(f, "{}", m),
        }
    }
}

fn corrupt<T>(msg: String) -> Result<T, ReadError> {
    Err(ReadError::Corrupt(msg))
}

// ---- the C library calls std does not wrap -------------------------------

extern "C" {
    fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: i64) -> *mut c_void;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fn flock(fd: c_int, op: c_int) -> c_int;
}
const PROT_READ: c_int = 1;
const MAP_SHARED: c_int = 1;
const LOCK_SH: c_int = 1;
const LOCK_NB: c_int = 4;
const LOCK_UN: c_int = 8;
const EWOULDBLOCK: i32 = 11;
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const O_NOFOLLOW: i32 = 0o100000;
#[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
const O_NOFOLLOW: i32 = 0o400000;
const O_NONBLOCK: i32 = 0o4000;

/// A file image: either a read-only shared mapping or an owned, 8-aligned
/// buffer (for tests and fuzzing). All access goes through bounds-checked
/// copies or atomic loads; no Rust reference into shared memory is made.
struct Image {
    ptr: *const u8,
    len: usize,
    mapped: bool,
    _owned: Vec<u64>,
}

impl Image {
    fn map(file: &File, len: usize) -> Result<Image, ReadError> {
        let p = unsafe { mmap(std::ptr::null_mut(), len, PROT_READ, MAP_SHARED, file.as_raw_fd(), 0) };
        if p as isize == -1 {
            return Err(ReadError::Io(format!("cannot map: {}", std::io::Error::last_os_error())));
        }
        Ok(Image { ptr: p as *const u8, len, mapped: true, _owned: Vec::new() })
    }

    fn from_bytes(data: &[u8]) -> Image {
        let mut words = vec![0u64; data.len() / 8 + 1];
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), words.as_mut_ptr() as *mut u8, data.len()) };
        Image { ptr: words.as_ptr() as *const u8, len: data.len(), mapped: false, _owned: words }
    }

    /// Copies `n` bytes at `off`; the caller has checked the bounds.
    fn bytes(&self, off: u64, n: u64) -> Vec<u8> {
        assert!(off.checked_add(n).map_or(false, |e| e <= self.len as u64));
        let mut v = vec![0u8; n as usize];
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off as usize), v.as_mut_ptr(), n as usize) };
        v
    }
    fn u16(&self, off: u64) -> u16 {
        let b = self.bytes(off, 2);
        u16::from_le_bytes([b[0], b[1]])
    }
    fn u32(&self, off: u64) -> u32 {
        let b = self.bytes(off, 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn u64(&self, off: u64) -> u64 {
        let b = self.bytes(off, 8);
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        u64::from_le_bytes(a)
    }
    fn atomic(&self, off: u64) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= self.len as u64);
        unsafe { &*(self.ptr.add(off as usize) as *const AtomicU64) }
    }
    fn load_acquire(&self, off: u64) -> u64 {
        u64::from_le(self.atomic(off).load(Ordering::Acquire))
    }
    fn load_relaxed(&self, off: u64) -> u64 {
        u64::from_le(self.atomic(off).load(Ordering::Relaxed))
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if self.mapped {
            unsafe { munmap(self.ptr as *mut c_void, self.len) };
        }
    }
}

// ---- liveness without locks (docs/format.md, liveness) -------------------

/// This boot's id from the kernel (16 bytes), or zeros if unknown.
fn boot_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let hex: Vec<u8> = text.trim().bytes().filter(|&c| c != b'-').collect();
    if hex.len() != 32 {
        return id;
    }
    for (i, pair) in hex.chunks(2).enumerate() {
        match std::str::from_utf8(pair).ok().and_then(|p| u8::from_str_radix(p, 16).ok()) {
            Some(b) => id[i] = b,
            None => return [0u8; 16],
        }
    }
    id
}

/// Clock ticks after boot at which `pid` started (/proc/PID/stat field 22),
/// or None if there is no such process in our pid namespace.
fn process_start_time(pid: u64) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{}/stat", pid)).ok()?;
    // the command name (field 2) is in parentheses and may hold spaces or ')'
    let after = stat.iter().rposition(|&c| c == b')')? + 2;
    let rest = String::from_utf8_lossy(stat.get(after..)?).into_owned();
    Some(rest.split_whitespace().nth(19).and_then(|f| f.parse().ok()).unwrap_or(0))
}

/// Where locks are not available: alive if the writer's boot is this boot
/// and its pid exists with the same start time (when recorded); else dead.
pub fn liveness_by_identity(ident: &Identity) -> &'static str {
    if ident.pid == 0 || ident.pid > i32::MAX as u64 || ident.boot_id != boot_id() {
        return "dead";
    }
    match process_start_time(ident.pid) {
        None => "dead",
        Some(started) if ident.start_time != 0 && started != ident.start_time => "dead",
        Some(_) => "alive",
    }
}

// ---- parsed metadata ----------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub major: u16,
    pub minor: u16,
    pub state: u64,
    pub flags: u64,
    pub pid: u64,
    pub start_time: u64,
    pub boot_id: [u8; 16],
    pub instance_id: [u8; 16],
    pub created_ns: u64,
    pub closed_ns: u64,
    pub publisher: String,
    pub program: String,
}

/// One record (series) with its immutable metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub offset: u64,
    pub kind: u16,
    pub flags: u16,
    pub aggregation: u16,
    pub value_offset: u32,
    pub value_size: u32,
    pub capacity: u32,
    pub name: String,
    pub help: String,
    pub unit: String,
    /// (name, value) in file order.
    pub labels: Vec<(String, String)>,
    pub params: Vec<f64>,
    /// Info keys and values, enum states.
    pub extra: Vec<String>,
    /// record_size: a histogram's or summary's min and max follow its value area (format 1.2).
    pub size: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// The latch could not be read consistently within the retry bound.
    Unreadable,
    Counter(u64),
    FloatCounter(f64),
    Gauge(f64),
    /// count, sum, bucket counts (not cumulative; the last is +Inf), lifetime (min, max) when known.
    Histogram { count: u64, sum: f64, buckets: Vec<u64>, extremes: Option<(f64, f64)> },
    Summary { count: u64, sum: f64, extremes: Option<(f64, f64)> },
    Text(String),
    Info,
    /// Index into `Record::extra`.
    Enum(u64),
    /// A checked stable copy of an exponential histogram (section 14).
    ExpHistogram(ExpHistogram),
    /// An exemplar record's (section 15); None when not written yet or malformed. Its record's name
    /// and labels are its series'; params `[]` for a counter, `[bucket upper bound]` for a histogram.
    Exemplar(Option<Exemplar>),
}

/// One exemplar (section 15): what the reference reader's exemplar_read.decode gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub value: f64,
    /// Unix time in nanoseconds.
    pub time_ns: u64,
    pub labels: Vec<(String, String)>,
}

/// The netstring fields of `data` (as _knob_layout.decode_netstrings), at most `limit`; None if malformed.
fn netstrings(data: &[u8], limit: usize) -> Option<Vec<String>> {
    let (mut out, mut pos, n) = (Vec::new(), 0usize, data.len());
    while pos < n {
        if out.len() >= limit {
            return None;
        }
        let mut d = 0usize;
        let mut len: u64 = 0;
        while pos + d < n && d < 11 && data[pos + d].is_ascii_digit() {
            len = len * 10 + (data[pos + d] - b'0') as u64;
            d += 1;
        }
        if d == 0 || d > 10 || (d > 1 && data[pos] == b'0') || pos + d >= n || data[pos + d] != b':' {
            return None;
        }
        let start = pos + d + 1;
        if len >= (n - start) as u64 || data[start + len as usize] != b',' {
            return None;
        }
        out.push(lossy(&data[start..start + len as usize]));
        pos = start + len as usize + 1;
    }
    Some(out)
}

const EXEMPLAR_MAX_CHARS: usize = 128;

/// An exemplar's text: netstrings value, Unix ns, then label name/value pairs.
pub fn decode_exemplar(text: &[u8]) -> Option<Exemplar> {
    let f = netstrings(text, 2 + 2 * EXEMPLAR_MAX_CHARS)?;
    if f.len() < 2 || f.len() % 2 != 0 || f[1].is_empty() || !f[1].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let time_ns: u64 = f[1].parse().ok()?;
    let value: f64 = f[0].trim().parse().ok()?;
    let labels = f[2..].chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
    Some(Exemplar { value, time_ns, labels })
}

/// Bucket `offset + j` of a sign holds `counts[j]`; the zero threshold is
/// the record's one param. `min` and `max` are NaN without observations, and
/// `scale` is 20 (the finest) when no bucket is held, as the reference reader says.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpHistogram {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub scale: i64,
    pub zero_count: u64,
    pub positive: (i64, Vec<u64>),
    pub negative: (i64, Vec<u64>),
}

/// Section 14's checks of a stable copy `w` with `m` slots per sign.
fn exp_value(w: &[u64], m: u64) -> Result<ExpHistogram, String> {
    let scale = w[5] as i64;
    if !(EXP_MIN_SCALE..=EXP_MAX_SCALE).contains(&scale) {
        return Err(format!("scale {} outside -4..20", scale));
    }
    let mut total = w[4];
    let mut ranges = Vec::with_capacity(2);
    for sign in 0..2u64 {
        let (lo, len) = (w[6 + 2 * sign as usize] as i64, w[7 + 2 * sign as usize]);
        if len > m {
            return Err(format!("bucket range longer than its {} slots", m));
        }
        let mut counts = Vec::with_capacity(len as usize);
        for j in 0..len {
            let slot = (lo as i128 + j as i128).rem_euclid(m as i128) as u64;
            let c = w[(EXP_HEAD + sign * m + slot) as usize];
            total = total.checked_add(c).ok_or_else(|| "bucket counts overflow".to_string())?;
            counts.push(c);
        }
        ranges.push((lo, counts));
    }
    if total != w[0] {
        return Err(format!("bucket counts do not add up to the count {}", w[0]));
    }
    let negative = ranges.pop().unwrap();
    let positive = ranges.pop().unwrap();
    let empty = positive.1.is_empty() && negative.1.is_empty();
    let (min, max) = if w[0] == 0 { (f64::NAN, f64::NAN) } else { (f64::from_bits(w[2]), f64::from_bits(w[3])) };
    Ok(ExpHistogram {
        count: w[0],
        sum: f64::from_bits(w[1]),
        min,
        max,
        scale: if empty { EXP_MAX_SCALE } else { scale },
        zero_count: w[4],
        positive,
        negative,
    })
}

#[derive(Debug, Clone)]
pub struct Series {
    pub record: Rc<Record>,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub identity: Identity,
    /// "alive", "dead" or "closed".
    pub liveness: &'static str,
    pub series: Vec<Series>,
}

struct Header {
    header_size: u64,
    state: u64,
    capacity: u64,
    end: u64,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Section 9, step 2.
fn check_header(img: &Image) -> Result<Header, ReadError> {
    let size = img.len as u64;
    if size < HEADER_SIZE {
        return Err(ReadError::NotReady);
    }
    let magic = img.u64(0);
    if magic == 0 {
        return Err(ReadError::NotReady);
    }
    if magic == MAGIC_SWAPPED {
        return corrupt("big-endian statmap file (magic \"1PAMTATS\"); version 1 files are little-endian".into());
    }
    if magic != MAGIC {
        return corrupt("not a statmap file (bad magic)".into());
    }
    if size % 8 != 0 {
        return corrupt(format!("file size {} is not a multiple of 8", size));
    }
    // State first: a writer may be half-way through the rest of the header.
    let state = img.load_acquire(H_STATE as u64);
    if state == 0 {
        return Err(ReadError::NotReady);
    }
    let major = img.u16(8);
    if major != MAJOR {
        return corrupt(format!("unsupported format major version {} (this reader knows {})", major, MAJOR));
    }
    let header_size = img.u32(12) as u64;
    // end before capacity: capacity is then never older than end (section 9)
    let end = img.load_acquire(H_END as u64);
    let capacity = img.load_acquire(H_CAPACITY as u64);
    if header_size % 8 != 0 || header_size < HEADER_SIZE || header_size > size {
        return corrupt(format!("bad header_size {}", header_size));
    }
    if state != 1 && state != 2 {
        return corrupt(format!("bad state {}", state));
    }
    if capacity < header_size || capacity > size {
        return corrupt(format!("capacity {} outside [header_size, file size {}]", capacity, size));
    }
    if end < header_size || end > capacity {
        return corrupt(format!("end {} outside [header_size, capacity]", end));
    }
    Ok(Header { header_size, state, capacity, end })
}

fn nul_string(b: &[u8]) -> String {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    lossy(&b[..n])
}

fn read_identity(img: &Image, state: u64) -> Identity {
    let mut boot_id = [0u8; 16];
    boot_id.copy_from_slice(&img.bytes(64, 16));
    let mut instance_id = [0u8; 16];
    instance_id.copy_from_slice(&img.bytes(80, 16));
    Identity {
        major: img.u16(8),
        minor: img.u16(10),
        state,
        flags: img.u64(40),
        pid: img.u64(48),
        start_time: img.u64(56),
        boot_id,
        instance_id,
        created_ns: img.u64(96),
        closed_ns: img.load_relaxed(H_CLOSED_NS as u64),
        publisher: nul_string(&img.bytes(112, 64)),
        program: nul_string(&img.bytes(176, 80)),
    }
}

/// Validates and parses the record at `o` (section 4.2). Returns the record
/// size and the record, or None for an unknown type (skipped).
fn parse_record(img: &Image, o: u64, end: u64) -> Result<(u64, Option<Record>), ReadError> {
    let bad = |m: String| -> Result<(u64, Option<Record>), ReadError> { corrupt(format!("record at offset {}: {}", o, m)) };
    if o % 8 != 0 || o + R_HEADER > end {
        return bad(format!("truncated record header (end {})", end));
    }
    let h = img.bytes(o, R_HEADER);
    let r32 = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let r16 = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    let (rsize, kind, flags, agg) = (r32(0) as u64, r16(4), r16(6), r16(8));
    let (voff, vsize, nlabels, nparams) = (r32(12) as u64, r32(16) as u64, r32(20), r32(24));
    let (nstrings, ssize, cap) = (r32(28), r32(32) as u64, r32(36));
    if rsize < R_HEADER || rsize % 8 != 0 || rsize > MAX_RECORD || o + rsize > end {
        return bad(format!("bad record_size {}", rsize));
    }
    if nparams > MAX_PARAMS || nstrings > MAX_STRINGS {
        return bad(format!("too many params ({}) or strings ({})", nparams, nstrings));
    }
    if (nstrings as u64) < 3 + 2 * nlabels as u64 {
        return bad(format!("string_count {} below 3 + 2 * label_count {}", nstrings, nlabels));
    }
    let meta_end = R_HEADER + 8 * nparams as u64 + ssize;
    if meta_end > rsize {
        return bad(format!("params and strings ({} bytes) pass record_size {}", meta_end, rsize));
    }
    if voff % 8 != 0 || voff < meta_end || voff + vsize > rsize {
        return bad(format!("bad value_offset {} / value_size {}", voff, vsize));
    }
    let table = img.bytes(o + R_HEADER + 8 * nparams as u64, ssize);
    let mut strings: Vec<&[u8]> = Vec::with_capacity(nstrings as usize);
    let mut pos: u64 = 0;
    for i in 0..nstrings {
        if pos + 4 > ssize {
            return bad(format!("string {} passes the string table", i));
        }
        let p = pos as usize;
        let len = u32::from_le_bytes([table[p], table[p + 1], table[p + 2], table[p + 3]]) as u64;
        if len > MAX_STRING as u64 || pos + 4 + len > ssize {
            return bad(format!("string {} (length {}) passes the string table or is too long", i, len));
        }
        strings.push(&table[p + 4..p + 4 + len as usize]);
        pos += 4 + len;
    }
    if pos != ssize {
        return bad(format!("strings use {} bytes, strings_size says {}", pos, ssize));
    }
    // An exemplar record of another shape is skipped as an unknown record (exemplar_read.usable);
    // its flags, params and strings are not checked, as the reference reader does not.
    let exemplar = kind == EXEMPLAR
        && nparams <= 1
        && cap > 0
        && cap <= MAX_TEXT
        && cap % 8 == 0
        && vsize == 8 + 2 * (8 + cap as u64);
    if !(COUNTER..=ENUM).contains(&kind) && kind != EXP_HISTOGRAM && !exemplar {
        return Ok((rsize, None)); // unknown to this reader (knobs, type 8, among them)
    }
    let nextra = nstrings - 3 - 2 * nlabels;
    let s: Vec<String> = strings.iter().map(|b| lossy(b)).collect();
    let nl = nlabels as usize;
    let record = |params: Vec<f64>| Record {
        offset: o,
        kind,
        flags,
        aggregation: agg,
        value_offset: voff as u32,
        value_size: vsize as u32,
        capacity: cap,
        name: s[0].clone(),
        help: s[1].clone(),
        unit: s[2].clone(),
        labels: (0..nl).map(|i| (s[3 + 2 * i].clone(), s[4 + 2 * i].clone())).collect(),
        params,
        extra: s[3 + 2 * nl..].to_vec(),
        size: rsize as u32,
    };
    if exemplar {
        let params = (0..nparams as u64).map(|i| f64::from_bits(img.u64(o + R_HEADER + 8 * i))).collect();
        return Ok((rsize, Some(record(params))));
    }
    // "Unknown flag bits" (section 4.2) read as: bits no 1.x type defines,
    // as the reference reader does (FLOAT on a gauge is accepted, and ignored).
    let allowed = FLAG_FLOAT | FLAG_LOG_BUCKETS;
    let want: u64 = match kind {
        COUNTER | GAUGE | ENUM => 8,
        HISTOGRAM => 8 + 2 * 8 * (nparams as u64 + 3),
        SUMMARY => 40,
        TEXT => 8 + 2 * (8 + align8(cap as u64)),
        EXP_HISTOGRAM => 8 + 2 * 8 * (EXP_HEAD + 2 * cap as u64),
        _ => 0,
    };
    let tn = type_name(kind);
    if flags & !allowed != 0 {
        return bad(format!("{} unknown flag bits", tn));
    }
    if vsize != want {
        return bad(format!("{} value_size does not match the type", tn));
    }
    if kind == EXP_HISTOGRAM && (nparams != 1 || cap < 1 || cap > EXP_MAX_BUCKETS) {
        return bad(format!("{} needs one param and 1..{} buckets", tn, EXP_MAX_BUCKETS));
    }
    if nparams != 0 && kind != HISTOGRAM && kind != EXP_HISTOGRAM {
        return bad(format!("{} parameters on a type that has none", tn));
    }
    if kind == TEXT && cap > MAX_TEXT {
        return bad(format!("{} text capacity above 1 MiB", tn));
    }
    if kind == INFO && nextra % 2 != 0 {
        return bad(format!("{} info needs an even number of key/value strings", tn));
    }
    if kind == ENUM && nextra < 1 {
        return bad(format!("{} enum without states", tn));
    }
    if kind != ENUM && kind != INFO && nextra != 0 {
        return bad(format!("{} extra strings on a type that has none", tn));
    }
    let mut params = Vec::with_capacity(nparams as usize);
    for i in 0..nparams as u64 {
        let b = f64::from_bits(img.u64(o + R_HEADER + 8 * i));
        if !b.is_finite() || params.last().map_or(false, |&p: &f64| !(b > p)) {
            return bad("histogram bounds not finite and strictly increasing".into());
        }
        if kind == EXP_HISTOGRAM && !(b >= 0.0) {
            return bad("exponential histogram zero threshold below 0".into());
        }
        params.push(b);
    }
    Ok((rsize, Some(record(params))))
}

/// Section 6: copies the stable copy of the latch at `v`. For a text latch
/// only the words its length needs are copied. None when retries ran out.
fn latch_read(img: &Image, v: u64, copy_size: u64, nwords: u64, text_cap: Option<u64>) -> Option<Vec<u64>> {
    let mut out = vec![0u64; nwords as usize];
    for _ in 0..=YIELDS {
        for _ in 0..FAST_TRIES {
            let s1 = img.load_acquire(v);
            let c = v + 8 + (s1 & 1) * copy_size;
            let n = match text_cap {
                Some(cap) => {
                    out[0] = img.load_relaxed(c);
                    1 + align8(out[0].min(cap)) / 8
                }
                None => nwords,
            };
            let first = if text_cap.is_some() { 1 } else { 0 };
            for k in first..n {
                out[k as usize] = img.load_relaxed(c + 8 * k);
            }
            fence(Ordering::Acquire);
            if img.load_relaxed(v) == s1 {
                return Some(out);
            }
        }
        std::thread::yield_now();
    }
    None
}

/// A histogram's or summary's lifetime (min, max), after its value area (format 1.2, docs/format.md 5.1):
/// read after its latch showed `count`; None without observations, from older writers, or not min <= max.
fn extremes(img: &Image, r: &Record, count: u64) -> Option<(f64, f64)> {
    let at = r.value_offset as u64 + r.value_size as u64;
    if count == 0 || img.u16(10) < 2 || (r.size as u64) < at + 16 {
        return None;
    }
    let lo = f64::from_bits(img.load_acquire(r.offset + at));
    let hi = f64::from_bits(img.load_acquire(r.offset + at + 8));
    if lo <= hi {
        Some((lo, hi))
    } else {
        None
    }
}

fn read_value(img: &Image, r: &Record) -> Result<Value, ReadError> {
    let v = r.offset + r.value_offset as u64;
    let bad = |m: String| -> Result<Value, ReadError> { corrupt(format!("record at offset {}: {}", r.offset, m)) };
    Ok(match r.kind {
        COUNTER if r.flags & FLAG_FLOAT != 0 => Value::FloatCounter(f64::from_bits(img.load_acquire(v))),
        COUNTER => Value::Counter(img.load_acquire(v)),
        GAUGE => Value::Gauge(f64::from_bits(img.load_acquire(v))),
        ENUM => {
            let i = img.load_acquire(v);
            if i >= r.extra.len() as u64 {
                Value::Unreadable // no such state: no value (as the reference reader)
            } else {
                Value::Enum(i)
            }
        }
        INFO => Value::Info,
        SUMMARY => match latch_read(img, v, 16, 2, None) {
            None => Value::Unreadable,
            Some(w) => Value::Summary { count: w[0], sum: f64::from_bits(w[1]), extremes: extremes(img, r, w[0]) },
        },
        HISTOGRAM => {
            let n = r.params.len() as u64 + 3;
            match latch_read(img, v, 8 * n, n, None) {
                None => Value::Unreadable,
                Some(w) => {
                    let mut total: u64 = 0;
                    let mut overflow = false;
                    for &b in &w[2..] {
                        match total.checked_add(b) {
                            Some(t) => total = t,
                            None => overflow = true,
                        }
                    }
                    if overflow || total != w[0] {
                        return bad(format!("histogram count {} is not the sum of its buckets", w[0]));
                    }
                    let extremes = extremes(img, r, w[0]);
                    Value::Histogram { count: w[0], sum: f64::from_bits(w[1]), buckets: w[2..].to_vec(), extremes }
                }
            }
        }
        EXP_HISTOGRAM => {
            let n = EXP_HEAD + 2 * r.capacity as u64;
            match latch_read(img, v, 8 * n, n, None) {
                None => Value::Unreadable,
                Some(w) => match exp_value(&w, r.capacity as u64) {
                    Ok(e) => Value::ExpHistogram(e),
                    Err(m) => return bad(format!("exponential histogram {}", m)),
                },
            }
        }
        TEXT => {
            let cap = r.capacity as u64;
            let copy = 8 + align8(cap);
            match latch_read(img, v, copy, copy / 8, Some(cap)) {
                None => Value::Unreadable,
                Some(w) => {
                    if w[0] > cap {
                        return bad(format!("text length {} above its capacity {}", w[0], cap));
                    }
                    let mut bytes = Vec::with_capacity(w[0] as usize);
                    for word in &w[1..] {
                        bytes.extend_from_slice(&word.to_le_bytes());
                    }
                    bytes.truncate(w[0] as usize);
                    Value::Text(lossy(&bytes))
                }
            }
        }
        EXEMPLAR => {
            let cap = r.capacity as u64;
            let copy = 8 + align8(cap);
            Value::Exemplar(match latch_read(img, v, copy, copy / 8, Some(cap)) {
                Some(w) if w[0] <= cap => {
                    let mut bytes = Vec::with_capacity(copy as usize);
                    for word in &w[1..] {
                        bytes.extend_from_slice(&word.to_le_bytes());
                    }
                    bytes.truncate(w[0] as usize);
                    decode_exemplar(&bytes)
                }
                _ => None, // torn or not written: no exemplar, and the file is fine
            })
        }
        _ => Value::Info,
    })
}

/// Validates and reads a whole file image held in memory (tests, fuzzing).
pub fn read_bytes(data: &[u8]) -> Result<(Identity, Vec<Series>), ReadError> {
    let img = Image::from_bytes(data);
    let h = check_header(&img)?;
    let ident = read_identity(&img, h.state);
    let mut recs = Vec::new();
    let mut o = h.header_size;
    while o < h.end {
        let (size, rec) = parse_record(&img, o, h.end)?;
        if let Some(r) = rec {
            recs.push(Rc::new(r));
        }
        o += size;
    }
    let mut series = Vec::with_capacity(recs.len());
    for r in recs {
        let value = read_value(&img, &r)?;
        series.push(Series { record: r, value });
    }
    Ok((ident, series))
}

/// A reader for one file; call [`Reader::snapshot`] as often as you like.
/// Records are parsed once and cached (they are immutable once published).
pub struct Reader {
    pub path: String,
    file: File,
    img: Option<Image>,
    records: Vec<Rc<Record>>,
    parsed_end: u64,
    corrupt: Option<String>,
}

impl Reader {
    /// Opens without following symbolic links; checks it is a regular file.
    pub fn open(path: &str) -> Result<Reader, ReadError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NOFOLLOW | O_NONBLOCK)
            .open(path)
            .map_err(|e| ReadError::Io(format!("cannot open: {}", e)))?;
        let md = file.metadata().map_err(|e| ReadError::Io(format!("cannot stat: {}", e)))?;
        let ft = md.file_type();
        if !ft.is_file() || ft.is_fifo() || ft.is_socket() {
            return corrupt("not a regular file".into());
        }
        Ok(Reader { path: path.to_string(), file, img: None, records: Vec::new(), parsed_end: 0, corrupt: None })
    }

    /// Maps the file (again) when its size changed.
    fn remap(&mut self) -> Result<(), ReadError> {
        let size = self.file.metadata().map_err(|e| ReadError::Io(format!("cannot stat: {}", e)))?.size() as usize;
        if let Some(img) = &self.img {
            if img.len == size {
                return Ok(());
            }
            if size < img.len {
                return corrupt(format!("file shrank from {} to {} bytes", img.len, size));
            }
        }
        self.img = None;
        if (size as u64) < HEADER_SIZE {
            return Err(ReadError::NotReady);
        }
        self.img = Some(Image::map(&self.file, size)?);
        Ok(())
    }

    fn header(&mut self) -> Result<Header, ReadError> {
        self.remap()?;
        match check_header(self.img.as_ref().unwrap()) {
            Err(ReadError::Corrupt(m)) => {
                // capacity or end past our mapping: the file may have grown
                let size = self.file.metadata().map(|m| m.size()).unwrap_or(0) as usize;
                if size > self.img.as_ref().unwrap().len {
                    self.remap()?;
                    check_header(self.img.as_ref().unwrap())
                } else {
                    Err(ReadError::Corrupt(m))
                }
            }
            other => other,
        }
    }

    fn liveness(&self, state: u64, ident: &Identity) -> &'static str {
        if state == 2 {
            return "closed";
        }
        let fd = self.file.as_raw_fd();
        if unsafe { flock(fd, LOCK_SH | LOCK_NB) } == 0 {
            unsafe { flock(fd, LOCK_UN) };
            return "dead";
        }
        if std::io::Error::last_os_error().raw_os_error() == Some(EWOULDBLOCK) {
            return "alive";
        }
        liveness_by_identity(ident) // locks do not work here (section 9.2)
    }

    pub fn snapshot(&mut self) -> Result<Snapshot, ReadError> {
        if let Some(m) = &self.corrupt {
            return corrupt(m.clone());
        }
        let r = self.snapshot_inner();
        if let Err(ReadError::Corrupt(m)) = &r {
            self.corrupt = Some(m.clone());
        }
        r
    }

    fn snapshot_inner(&mut self) -> Result<Snapshot, ReadError> {
        let h = self.header()?;
        if h.end < self.parsed_end {
            return corrupt("end moved backwards".into());
        }
        let img = self.img.as_ref().unwrap();
        let ident = read_identity(img, h.state);
        let mut o = if self.parsed_end == 0 { h.header_size } else { self.parsed_end };
        while o < h.end {
            let (size, rec) = parse_record(img, o, h.end)?;
            if let Some(r) = rec {
                self.records.push(Rc::new(r));
            }
            o += size;
            self.parsed_end = o;
        }
        let _ = h.capacity;
        let mut series = Vec::with_capacity(self.records.len());
        for r in &self.records {
            series.push(Series { record: r.clone(), value: read_value(img, r)? });
        }
        let liveness = self.liveness(h.state, &ident);
        Ok(Snapshot { identity: ident, liveness, series })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Identity {
        let pid = std::process::id() as u64;
        Identity {
            major: 1,
            minor: 0,
            state: 1,
            flags: 0,
            pid,
            start_time: process_start_time(pid).unwrap(),
            boot_id: boot_id(),
            instance_id: [0; 16],
            created_ns: 0,
            closed_ns: 0,
            publisher: "p".into(),
            program: "t".into(),
        }
    }

    #[test]
    fn exp_copy_checks_and_negative_offsets() {
        // M = 4: positive buckets -3..-1 (slots 1, 2, 3), negative bucket 5 (slot 1), zero count 1
        let mut w = vec![0u64; 10 + 8];
        w[0] = 7;
        w[4] = 1;
        w[5] = 2; // scale
        w[6] = (-3i64) as u64;
        w[7] = 3;
        w[8] = 5;
        w[9] = 1;
        w[10 + 1] = 1;
        w[10 + 2] = 2;
        w[10 + 3] = 2;
        w[10 + 4 + 1] = 1;
        let e = exp_value(&w, 4).unwrap();
        assert_eq!((e.scale, e.positive.clone(), e.negative.clone()), (2, (-3, vec![1, 2, 2]), (5, vec![1])));
        w[0] = 8; // counts do not add up
        assert!(exp_value(&w, 4).unwrap_err().contains("add up"));
        w[0] = 7;
        w[5] = 21u64; // scale out of range
        assert!(exp_value(&w, 4).unwrap_err().contains("scale"));
        w[5] = 2;
        w[7] = 5; // longer than the slots
        assert!(exp_value(&w, 4).unwrap_err().contains("longer"));
        w[7] = 3;
        w[10 + 2] = u64::MAX; // overflow, not a wrap-around that adds up
        assert!(exp_value(&w, 4).is_err());
        // no buckets: the finest scale, NaN min and max without observations
        let empty = exp_value(&vec![0u64; 18], 4).unwrap();
        assert_eq!(empty.scale, 20);
        assert!(empty.min.is_nan() && empty.max.is_nan());
    }

    #[test]
    fn identity_fallback_tells_live_from_dead() {
        assert_ne!(boot_id(), [0u8; 16], "no boot id from the kernel");
        let live = me();
        assert_eq!(liveness_by_identity(&live), "alive");
        // pid reused: same pid, another start time
        assert_eq!(liveness_by_identity(&Identity { start_time: live.start_time + 1, ..live.clone() }), "dead");
        // another boot
        let mut other_boot = live.boot_id;
        other_boot[0] ^= 0xff;
        assert_eq!(liveness_by_identity(&Identity { boot_id: other_boot, ..live.clone() }), "dead");
        // no such process (beyond pid_max), and nonsense pids
        assert_eq!(liveness_by_identity(&Identity { pid: 4_194_305, ..live.clone() }), "dead");
        assert_eq!(liveness_by_identity(&Identity { pid: 0, ..live.clone() }), "dead");
        assert_eq!(liveness_by_identity(&Identity { pid: u64::MAX, ..live.clone() }), "dead");
        // start time unknown (0): the pid alone decides
        assert_eq!(liveness_by_identity(&Identity { start_time: 0, ..live }), "alive");
    }

    #[test]
    fn exemplar_texts_decode_as_the_reference_reader() {
        let e = decode_exemplar(b"4:0.25,19:1767225601500000000,8:trace_id,2:ab,").unwrap();
        assert_eq!((e.value, e.time_ns), (0.25, 1767225601500000000));
        assert_eq!(e.labels, vec![("trace_id".to_string(), "ab".to_string())]);
        // a field's bad UTF-8 is replaced within the field, its length counted in bytes
        let e = decode_exemplar(b"1:1,1:5,1:k,2:\xff!,").unwrap();
        assert_eq!(e.labels, vec![("k".to_string(), "\u{fffd}!".to_string())]);
        for bad in [&b""[..], b"1:1,", b"1:1,1:5,1:a,", b"1:x,1:5,", b"1:1,2:-5,", b"1:1,01:5,", b"1:1,1:5", b"1:1,9:5,"] {
            assert_eq!(decode_exemplar(bad), None, "{:?}", bad);
        }
    }

}
