//! Image references: `[registry[:port]/]path[:tag][@digest]`.

use crate::manifest::{Digest, DigestError};

/// What is wrong with an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("must be 1 to 512 characters")]
    Length,
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(
        "tag {0:?} must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
    )]
    Tag(String),
    #[error("registry {0:?} must be a host name with an optional port")]
    Registry(String),
    #[error(
        "name component {0:?} must be lower-case letters and digits, separated by single '.', '_', '__' or '-'"
    )]
    Component(String),
}

/// Checks that `input` is an image reference a registry client accepts:
/// an optional registry host (with a `.` or `:`, or `localhost`), a path of
/// lower-case components (`[a-z0-9]+([._-][a-z0-9]+)*`, `/`-separated), an
/// optional tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`) and an optional
/// `@sha256:` digest. The error says what is wrong otherwise.
pub fn validate_image_ref(input: &str) -> Result<(), ImageRefError> {
    if input.is_empty() || input.len() > 512 {
        return Err(ImageRefError::Length);
    }
    let (rest, digest) = match input.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (input, None),
    };
    if let Some(digest) = digest {
        Digest::parse(digest)?;
    }
    // A ':' after the last '/' starts the tag; one before it is a port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(ImageRefError::Tag(tag.to_string()));
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    let has_registry = components.len() > 1 && (first.contains(['.', ':']) || first == "localhost");
    if has_registry {
        validate_registry(first)?;
        components.remove(0);
    }
    for component in components {
        if !is_path_component(component) {
            return Err(ImageRefError::Component(component.to_string()));
        }
    }
    Ok(())
}

fn validate_registry(host: &str) -> Result<(), ImageRefError> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(ImageRefError::Registry(host.to_string()))
    }
}

fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return false;
    }
    // Separators: '.', '_', '__', or any run of '-'; never two other separators in a row.
    let mut previous_separator: Option<u8> = None;
    let mut run = 0;
    for &b in bytes {
        if alnum(&b) {
            previous_separator = None;
            run = 0;
            continue;
        }
        if !matches!(b, b'.' | b'_' | b'-') {
            return false;
        }
        run += 1;
        let allowed = match previous_separator {
            None => true,
            Some(b'_') => b == b'_' && run == 2,
            Some(b'-') => b == b'-',
            Some(_) => false,
        };
        if !allowed {
            return false;
        }
        previous_separator = Some(b);
    }
    true
}

/// `(repository, tag)` of `host[:port]/path:tag`; `None` for a reference
/// without a tag, or with a digest.
pub fn split_tag(image: &str) -> Option<(&str, &str)> {
    let (repository, tag) = image.rsplit_once(':')?;
    (!tag.contains('/') && !image.contains('@')).then_some((repository, tag))
}

/// The repository of an image reference: without its tag and digest.
pub fn repository_of(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => image,
    }
}

/// The registry part (`host[:port]`) of an image reference.
pub fn registry_of(image: &str) -> &str {
    image.split('/').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_is_the_image_without_tag_or_digest() {
        for image in [
            "127.0.0.1:5000/team/app:v1",
            "127.0.0.1:5000/team/app",
            "127.0.0.1:5000/team/app@sha256:abc",
            "127.0.0.1:5000/team/app:v1@sha256:abc",
        ] {
            assert_eq!(repository_of(image), "127.0.0.1:5000/team/app", "{image}");
        }
    }

    #[test]
    fn accepts_common_references() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for input in [
            "alpine".to_string(),
            "library/alpine:3.19".into(),
            "localhost:5000/team/app".into(),
            "127.0.0.1:5000/team/app:v1.2.3".into(),
            "registry.example.com/a/b/c:latest".into(),
            "simulated.invalid/helix-simulated:Job_1.x".into(),
            "my__app/x--y".into(),
            format!("localhost/app@{digest}"),
            format!("localhost/app:1@{digest}"),
        ] {
            assert_eq!(validate_image_ref(&input), Ok(()), "{input}");
        }
    }

    #[test]
    fn refuses_malformed_references() {
        for input in [
            "",
            "UPPER/app",
            "app:",
            "app:-tag",
            "localhost:99999/app",
            "/app",
            "app/",
            "a..b",
            "a___b",
            "app@sha256:short",
            "app:tag with space",
            "-app",
        ] {
            assert!(validate_image_ref(input).is_err(), "{input}");
        }
    }
}
