//! `RUN --mount=` values, parsed as BuildKit's `parseMount` does.

use crate::parse::go_lower;
use crate::{Instruction, ParseError};

/// The `type=` of a RUN mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// A directory of the context or of another stage/image (`from=`).
    Bind,
    /// A persistent cache directory shared between builds (`id=`).
    Cache,
    /// An empty in-memory directory.
    Tmpfs,
    /// A build secret file or env var.
    Secret,
    /// The SSH agent socket.
    Ssh,
}

/// One `RUN --mount=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `type=`, default bind.
    pub kind: MountKind,
    /// `source=`/`src=`: path in the context, stage, image or cache.
    pub source: Option<String>,
    /// `target=`/`dst=`/`destination=`: path in the container.
    pub target: Option<String>,
    /// `from=`: stage name, stage index or image to take `source` from.
    pub from: Option<String>,
    /// `id=`: cache or secret/ssh id (a cache id is a host-side name).
    pub id: Option<String>,
    /// Writable: cache and tmpfs default true, others false; `rw`/`ro` set it.
    pub rw: bool,
    /// `required` (secret, ssh).
    pub required: bool,
    /// `sharing=` (cache): shared, private or locked, lowercased.
    pub sharing: Option<String>,
    /// `mode=` (octal), `uid=`, `gid=` (secret, ssh, cache).
    pub mode: Option<u32>,
    /// See `mode`.
    pub uid: Option<u32>,
    /// See `mode`.
    pub gid: Option<u32>,
    /// `size=` (tmpfs), as written.
    pub size: Option<String>,
    /// `env=` (secret): exposes the secret as this environment variable.
    pub env: Option<String>,
    /// 1-based line of the RUN.
    pub line: usize,
}

pub(crate) fn instruction_mounts(ins: &Instruction) -> Result<Vec<Mount>, ParseError> {
    if ins.keyword != "RUN" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for flag in ins.flags.iter().filter(|f| f.name == "mount") {
        let Some(value) = &flag.value else {
            return Err(ParseError::new(
                ins.start_line,
                "missing a value on flag: mount",
            ));
        };
        let m = parse_mount(value, ins.start_line)
            .map_err(|e| ParseError::new(ins.start_line, format!("--mount={value}: {e}")))?;
        out.push(m);
    }
    Ok(out)
}

/// Go's `encoding/csv` reading one record with default settings.
fn csv_record(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim_start_matches(['\n', '\r']);
    let s = s.strip_suffix('\n').unwrap_or(s);
    let s = s.strip_suffix('\r').unwrap_or(s);
    if s.is_empty() {
        return Err("failed to parse csv mounts: EOF".into());
    }
    let chars: Vec<char> = s.chars().collect();
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let mut field = String::new();
        if chars.get(i) == Some(&'"') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                    Some('"') => match chars.get(i + 1) {
                        Some('"') => {
                            field.push('"');
                            i += 2;
                        }
                        Some(',') => {
                            i += 1;
                            break;
                        }
                        None => {
                            i += 1;
                            break;
                        }
                        Some(_) => {
                            return Err("extraneous or missing \" in quoted-field".into());
                        }
                    },
                    Some(&c) => {
                        field.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(&c) = chars.get(i) {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err("bare \" in non-quoted-field".into());
                }
                field.push(c);
                i += 1;
            }
        }
        fields.push(field);
        match chars.get(i) {
            Some(',') => i += 1,
            _ => return Ok(fields),
        }
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean value {v:?}")),
    }
}

fn parse_u32(v: &str, radix: u32, key: &str) -> Result<u32, String> {
    u32::from_str_radix(v, radix).map_err(|_| format!("invalid value {v:?} for {key}"))
}

fn parse_mount(value: &str, line: usize) -> Result<Mount, String> {
    let fields = csv_record(value)?;
    let mut kind = MountKind::Bind;
    for field in &fields {
        if let Some((k, v)) = field.split_once('=')
            && crate::parse::go_equal_fold_ascii(k, "type")
        {
            kind = match go_lower(v).as_str() {
                "bind" => MountKind::Bind,
                "cache" => MountKind::Cache,
                "tmpfs" => MountKind::Tmpfs,
                "secret" => MountKind::Secret,
                "ssh" => MountKind::Ssh,
                _ => return Err(format!("unsupported mount type {v:?}")),
            };
        }
    }
    let secretish = matches!(kind, MountKind::Secret | MountKind::Ssh);
    let mut m = Mount {
        kind,
        source: None,
        target: None,
        from: None,
        id: None,
        rw: false,
        required: false,
        sharing: None,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        env: None,
        line,
    };
    let mut rw_auto = true;
    for field in &fields {
        let Some((key, v)) = field.split_once('=') else {
            match go_lower(field).as_str() {
                "readonly" | "ro" => {
                    m.rw = false;
                    rw_auto = false;
                }
                "readwrite" | "rw" => {
                    m.rw = true;
                    rw_auto = false;
                }
                "required" if secretish => m.required = true,
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let v = v.to_string();
        match go_lower(key).as_str() {
            "type" => {}
            "from" => m.from = Some(v),
            "source" | "src" => m.source = Some(v),
            "target" | "dst" | "destination" => m.target = Some(v),
            "readonly" | "ro" => {
                m.rw = !parse_bool(&v)?;
                rw_auto = false;
            }
            "readwrite" | "rw" => {
                m.rw = parse_bool(&v)?;
                rw_auto = false;
            }
            "required" if secretish => m.required = parse_bool(&v)?,
            "id" => m.id = Some(v),
            "sharing" if kind == MountKind::Cache => {
                let s = go_lower(&v);
                if !matches!(s.as_str(), "shared" | "private" | "locked") {
                    return Err(format!("unsupported sharing value {v:?}"));
                }
                m.sharing = Some(s);
            }
            "mode" => m.mode = Some(parse_u32(&v, 8, "mode")?),
            "uid" => m.uid = Some(parse_u32(&v, 10, "uid")?),
            "gid" => m.gid = Some(parse_u32(&v, 10, "gid")?),
            "size" if kind == MountKind::Tmpfs => m.size = Some(v),
            "env" if kind == MountKind::Secret => m.env = Some(v),
            k => return Err(format!("unexpected key '{k}' in '{field}'")),
        }
    }
    if rw_auto {
        m.rw = matches!(kind, MountKind::Cache | MountKind::Tmpfs);
    }
    if kind == MountKind::Secret && m.from.is_some() {
        return Err("secret mount should not have a from".into());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_follows_go_rules() {
        assert_eq!(csv_record("a,b=c,").unwrap(), ["a", "b=c", ""]);
        assert_eq!(
            csv_record(r#""target=/a,b","x=""q""""#).unwrap(),
            ["target=/a,b", r#"x="q""#]
        );
        assert!(csv_record(r#"a"b"#).is_err());
        assert!(csv_record(r#""ab"c"#).is_err());
        assert!(csv_record(r#""open"#).is_err());
        assert!(csv_record("").is_err());
    }

    #[test]
    fn mount_defaults_and_bare_booleans() {
        let m = parse_mount("target=/x", 1).unwrap();
        assert_eq!((m.kind, m.rw), (MountKind::Bind, false));
        let m = parse_mount("type=bind,target=/x,rw", 1).unwrap();
        assert!(m.rw);
        let m = parse_mount("TYPE=Cache,Target=/x,ro", 1).unwrap();
        assert_eq!((m.kind, m.rw), (MountKind::Cache, false));
        let m = parse_mount("type=cache,target=/x", 1).unwrap();
        assert!(m.rw);
        let m = parse_mount("type=secret,id=tok,required,env=TOKEN", 1).unwrap();
        assert_eq!((m.required, m.env.as_deref()), (true, Some("TOKEN")));
    }

    #[test]
    fn mount_errors() {
        assert!(parse_mount("type=volume,target=/x", 1).is_err());
        assert!(parse_mount("type=cache,target=/x,sharing=weird", 1).is_err());
        assert!(parse_mount("target=/x,bogus=1", 1).is_err());
        assert!(parse_mount("target=/x,bogus", 1).is_err());
        assert!(parse_mount("type=secret,id=a,from=img", 1).is_err());
        assert!(parse_mount("type=cache,target=/x,mode=9", 1).is_err());
    }
}
