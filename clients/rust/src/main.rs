//! statmap-read: print statmap files as JSON in the shape of
//! `statmap show --json` (or as text without --json).
//!
//!     statmap-read [--json] [--exemplars] [--repeat N] PATH...
//!
//! Exit status 1 when a file is corrupt or unreadable, 2 on bad usage.

use statmap::{type_name, ReadError, Reader, Snapshot, Value, FLAG_FLOAT, HISTOGRAM, INFO};
use std::io::Write;

/// Formats a float like Python's repr(); non-finite values as the strings
/// `statmap show --json` uses.
fn fmt_f64(d: f64) -> String {
    if d.is_nan() {
        return "\"NaN\"".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "\"+Inf\"".into() } else { "\"-Inf\"".into() };
    }
    // Rust's {:e} gives the shortest digits that read back exactly.
    let e = format!("{:e}", d);
    let (mant, exp) = e.split_at(e.find('e').unwrap());
    let exp: i32 = exp[1..].parse().unwrap();
    let neg = mant.starts_with('-');
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let nd = digits.len() as i32;
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else if nd <= exp + 1 {
            out.push_str(&digits);
            for _ in nd..exp + 1 {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            out.push_str(&digits[..(exp + 1) as usize]);
            out.push('.');
            out.push_str(&digits[(exp + 1) as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if nd > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(&format!("e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs()));
    }
    out
}

/// A JSON string as Python's json.dumps(ensure_ascii=True) writes it.
fn quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\u{8}' => o.push_str("\\b"),
            '\u{c}' => o.push_str("\\f"),
            ' '..='~' => o.push(ch),
            _ => {
                let mut buf = [0u16; 2];
                for unit in ch.encode_utf16(&mut buf) {
                    o.push_str(&format!("\\u{:04x}", unit));
                }
            }
        }
    }
    o.push('"');
    o
}

/// A tiny JSON tree printed like json.dump(indent=2).
enum J {
    Raw(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

fn s(v: &str) -> J {
    J::Raw(quote(v))
}

fn write_j(out: &mut String, j: &J, depth: usize) {
    let pad = |out: &mut String, d: usize| {
        out.push('\n');
        for _ in 0..d {
            out.push_str("  ");
        }
    };
    match j {
        J::Raw(r) => out.push_str(r),
        J::Arr(items) if items.is_empty() => out.push_str("[]"),
        J::Obj(items) if items.is_empty() => out.push_str("{}"),
        J::Arr(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                write_j(out, it, depth + 1);
            }
            pad(out, depth);
            out.push(']');
        }
        J::Obj(items) => {
            out.push('{');
            for (i, (k, v)) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                out.push_str(&quote(k));
                out.push_str(": ");
                write_j(out, v, depth + 1);
            }
            pad(out, depth);
            out.push('}');
        }
    }
}

/// Python dict semantics: a repeated key keeps its first place, last value.
fn dict(pairs: &[(String, String)]) -> J {
    let mut items: Vec<(String, J)> = Vec::new();
    for (k, v) in pairs {
        if let Some(slot) = items.iter_mut().find(|(kk, _)| kk == k) {
            slot.1 = s(v);
        } else {
            items.push((k.clone(), s(v)));
        }
    }
    J::Obj(items)
}

/// "min" and "max" (null when unknown), as the reference reader's JSON.
fn extremes_json(e: &Option<(f64, f64)>) -> Vec<(String, J)> {
    let (lo, hi) = match e {
        Some((lo, hi)) => (J::Raw(fmt_f64(*lo)), J::Raw(fmt_f64(*hi))),
        None => (J::Raw("null".into()), J::Raw("null".into())),
    };
    vec![("min".into(), lo), ("max".into(), hi)]
}

fn value_json(rec: &statmap::Record, v: &Value) -> J {
    match v {
        Value::Unreadable => J::Raw("null".into()),
        Value::Counter(u) => J::Raw(u.to_string()),
        Value::FloatCounter(f) | Value::Gauge(f) => J::Raw(fmt_f64(*f)),
        Value::Enum(i) => s(&rec.extra[*i as usize]),
        Value::Text(t) => s(t),
        Value::Summary { count, sum, extremes } => {
            let mut o = vec![("count".into(), J::Raw(count.to_string())), ("sum".into(), J::Raw(fmt_f64(*sum)))];
            o.extend(extremes_json(extremes));
            J::Obj(o)
        }
        Value::Histogram { count, sum, buckets, extremes } => {
            let mut cum = 0u64;
            let mut rows = Vec::new();
            for (i, b) in buckets.iter().enumerate() {
                cum = cum.wrapping_add(*b);
                let bound = if i < rec.params.len() { J::Raw(fmt_f64(rec.params[i])) } else { s("+Inf") };
                rows.push(J::Arr(vec![bound, J::Raw(cum.to_string())]));
            }
            let mut o = vec![
                ("count".into(), J::Raw(count.to_string())),
                ("sum".into(), J::Raw(fmt_f64(*sum))),
                ("buckets".into(), J::Arr(rows)),
            ];
            o.extend(extremes_json(extremes));
            J::Obj(o)
        }
        Value::ExpHistogram(e) => {
            let side = |(offset, counts): &(i64, Vec<u64>)| {
                J::Obj(vec![
                    ("offset".into(), J::Raw(offset.to_string())),
                    ("counts".into(), J::Arr(counts.iter().map(|c| J::Raw(c.to_string())).collect())),
                ])
            };
            J::Obj(vec![
                ("count".into(), J::Raw(e.count.to_string())),
                ("sum".into(), J::Raw(fmt_f64(e.sum))),
                ("min".into(), J::Raw(fmt_f64(e.min))),
                ("max".into(), J::Raw(fmt_f64(e.max))),
                ("scale".into(), J::Raw(e.scale.to_string())),
                ("zero_threshold".into(), J::Raw(fmt_f64(rec.params[0]))),
                ("zero_count".into(), J::Raw(e.zero_count.to_string())),
                ("positive".into(), side(&e.positive)),
                ("negative".into(), side(&e.negative)),
            ])
        }
        Value::Exemplar(_) => J::Raw("null".into()),
        Value::Info => {
            let pairs: Vec<(String, String)> =
                rec.extra.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].clone(), c[1].clone())).collect();
            dict(&pairs)
        }
    }
}

/// `--exemplars`: a process's decoded exemplars (section 15), as statmap-cat --exemplars prints them.
fn exemplars_json(sn: &Snapshot) -> J {
    let mut out = Vec::new();
    for se in &sn.series {
        let r = &*se.record;
        if let Value::Exemplar(Some(e)) = &se.value {
            let bucket = r.params.first().map_or(J::Raw("null".into()), |b| J::Raw(fmt_f64(*b)));
            out.push(J::Obj(vec![
                ("name".into(), s(&r.name)),
                ("labels".into(), dict(&r.labels)),
                ("bucket".into(), bucket),
                ("value".into(), J::Raw(fmt_f64(e.value))),
                ("time_ns".into(), J::Raw(e.time_ns.to_string())),
                ("exemplar_labels".into(), dict(&e.labels)),
            ]));
        }
    }
    J::Arr(out)
}

fn process_json(path: &str, snap: Option<&Snapshot>, with_exemplars: bool) -> J {
    let mut o: Vec<(String, J)> = vec![("path".into(), s(path))];
    match snap {
        Some(sn) => {
            let id = &sn.identity;
            let inst: String = id.instance_id.iter().map(|b| format!("{:02x}", b)).collect();
            o.push(("name".into(), s(&id.publisher)));
            o.push(("pid".into(), J::Raw(id.pid.to_string())));
            o.push(("state".into(), s(sn.liveness)));
            o.push(("program".into(), s(&id.program)));
            o.push(("instance".into(), s(&inst)));
            o.push(("created".into(), J::Raw(fmt_f64(id.created_ns as f64 / 1e9))));
            let metrics = sn
                .series
                .iter()
                .filter(|se| se.record.kind != statmap::EXEMPLAR) // not a metric: as statmap show --json
                .map(|se| {
                    let r = &*se.record;
                    J::Obj(vec![
                        ("name".into(), s(&r.name)),
                        ("type".into(), s(type_name(r.kind))),
                        ("help".into(), s(&r.help)),
                        ("unit".into(), s(&r.unit)),
                        ("labels".into(), dict(&r.labels)),
                        ("value".into(), value_json(r, &se.value)),
                    ])
                })
                .collect();
            o.push(("metrics".into(), J::Arr(metrics)));
            if with_exemplars {
                o.push(("exemplars".into(), exemplars_json(sn)));
            }
        }
        None => {
            o.push(("name".into(), s("")));
            o.push(("pid".into(), J::Raw("0".into())));
            o.push(("state".into(), s("not-ready")));
            o.push(("program".into(), s("")));
            o.push(("instance".into(), s("")));
            o.push(("created".into(), J::Raw("null".into())));
            o.push(("metrics".into(), J::Arr(Vec::new())));
        }
    }
    J::Obj(o)
}

fn value_text(rec: &statmap::Record, v: &Value) -> String {
    match v {
        Value::Unreadable => "(unreadable)".into(),
        Value::Counter(u) => u.to_string(),
        Value::FloatCounter(f) | Value::Gauge(f) => fmt_f64(*f),
        Value::Enum(i) => format!("'{}'", rec.extra[*i as usize]),
        Value::Text(t) => format!("'{}'", t),
        Value::Summary { count, sum, .. } => format!("count={} sum={}", count, fmt_f64(*sum)),
        Value::Histogram { count, sum, .. } => format!("count={} sum={}", count, fmt_f64(*sum)),
        Value::ExpHistogram(e) => format!("count={} sum={} scale={}", e.count, fmt_f64(e.sum), e.scale),
        Value::Exemplar(_) => String::new(),
        Value::Info => rec.extra.chunks(2).filter(|c| c.len() == 2).map(|c| format!("{}='{}'", c[0], c[1])).collect::<Vec<_>>().join(" "),
    }
}

fn main() {
    let mut json = false;
    let mut with_exemplars = false;
    let mut repeat: u64 = 1;
    let mut paths: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json = true,
            "--exemplars" => {
                json = true;
                with_exemplars = true;
            }
            "--repeat" => repeat = args.next().and_then(|n| n.parse().ok()).unwrap_or(0),
            "-h" | "--help" => {
                println!("usage: statmap-read [--json] [--exemplars] [--repeat N] PATH...");
                return;
            }
            _ => paths.push(a),
        }
    }
    if paths.is_empty() || repeat == 0 {
        eprintln!("usage: statmap-read [--json] [--exemplars] [--repeat N] PATH...");
        std::process::exit(2);
    }
    let mut readers: Vec<Result<Reader, ReadError>> = paths.iter().map(|p| Reader::open(p)).collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut status = 0;
    for _ in 0..repeat {
        let mut procs = Vec::new();
        let mut errors = Vec::new();
        let mut text = String::new();
        for (path, reader) in paths.iter().zip(readers.iter_mut()) {
            let res = match reader {
                Ok(r) => r.snapshot().map(Some),
                Err(e) => Err(e.clone()),
            };
            let res = match res {
                Err(ReadError::NotReady) => Ok(None),
                other => other,
            };
            match res {
                Ok(snap) => {
                    if json {
                        procs.push(process_json(path, snap.as_ref(), with_exemplars));
                    } else if let Some(sn) = snap {
                        let id = &sn.identity;
                        text.push_str(&format!("{}  pid {}  {}  {}  {}\n", id.publisher, id.pid, sn.liveness, id.program, path));
                        for se in sn.series.iter().filter(|se| se.record.kind != statmap::EXEMPLAR) {
                            let r = &*se.record;
                            let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{}=\"{}\"", k, v)).collect();
                            let l = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
                            let _ = r.kind == HISTOGRAM || r.kind == INFO || r.flags & FLAG_FLOAT != 0;
                            text.push_str(&format!("  {}{}  {}  {}\n", r.name, l, type_name(r.kind), value_text(r, &se.value)));
                        }
                    } else {
                        text.push_str(&format!("{}  not-ready\n", path));
                    }
                }
                Err(e) => errors.push((path.clone(), e.to_string())),
            }
        }
        status = if errors.is_empty() { 0 } else { 1 };
        if json {
            let mut doc = vec![("processes".to_string(), J::Arr(procs))];
            if !errors.is_empty() {
                let errs = errors
                    .iter()
                    .map(|(p, m)| J::Obj(vec![("path".into(), s(p)), ("problem".into(), s(m))]))
                    .collect();
                doc.push(("errors".into(), J::Arr(errs)));
            }
            let mut buf = String::new();
            write_j(&mut buf, &J::Obj(doc), 0);
            buf.push('\n');
            let _ = out.write_all(buf.as_bytes());
        } else {
            for (p, m) in &errors {
                text.push_str(&format!("{}: error: {}\n", p, m));
            }
            let _ = out.write_all(text.as_bytes());
        }
    }
    let _ = out.flush();
    std::process::exit(status);
}
