//! Loading: only components that fit the `clawcage:agent` world get in, and
//! the compile cache serves the second load.

use clawcage::{CacheOutcome, Cage, LoadError};
use clawcage_tests::{COMMAND_APP, HELLO, cage, component_bytes, test_options};

fn load_err(bytes: &[u8]) -> LoadError {
    cage()
        .load_component("bad", bytes, None)
        .expect_err("the component should be refused")
}

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid WAT")
}

#[test]
fn a_core_module_is_not_a_component() {
    let err = load_err(&wat("(module)"));
    assert!(
        matches!(err, LoadError::NotAComponent(ref m) if m.contains("core wasm module")),
        "{err}"
    );
}

#[test]
fn garbage_is_not_a_component() {
    for bytes in [&b""[..], b"hello world, not wasm", b"\0asm\x02\0\0\0"] {
        assert!(
            matches!(load_err(bytes), LoadError::NotAComponent(_)),
            "{bytes:?}"
        );
    }
}

#[test]
fn an_import_outside_the_world_is_named_at_load_time() {
    let err = load_err(&wat(
        r#"(component (import "wasi:http/outgoing-handler@0.2.0" (instance)))"#,
    ));
    assert!(
        matches!(err, LoadError::UnsupportedImport { ref import } if import == "wasi:http/outgoing-handler@0.2.0"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "component imports `wasi:http/outgoing-handler@0.2.0`, which is outside the clawcage:agent world"
    );
}

#[test]
fn a_command_component_is_the_wrong_world() {
    let err = load_err(&component_bytes(COMMAND_APP));
    let LoadError::WrongWorld(message) = &err else {
        panic!("expected wrong world, got {err}")
    };
    assert!(
        message.contains("must export `clawcage:agent/handler@0.2.0`"),
        "{message}"
    );
    assert!(message.contains("wasi:cli/run"), "{message}");
}

#[test]
fn a_handler_with_the_wrong_type_is_the_wrong_world() {
    let bytes = wat(r#"(component
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (instance $h (export "handle" (func $f)))
            (export "clawcage:agent/handler@0.2.0" (instance $h)))"#);
    let err = load_err(&bytes);
    let LoadError::WrongWorld(message) = &err else {
        panic!("expected wrong world, got {err}")
    };
    assert!(message.contains("handle"), "{message}");
}

#[test]
fn a_sha256_pin_is_verified() {
    let bytes = component_bytes(HELLO);
    let wrong = "0".repeat(64);
    let err = cage()
        .load_component("hello", &bytes, Some(&wrong))
        .unwrap_err();
    assert!(
        matches!(err, LoadError::DigestMismatch { ref expected, .. } if *expected == wrong),
        "{err}"
    );
    let right = cage()
        .load_component("hello", &bytes, None)
        .unwrap()
        .sha256()
        .to_string();
    assert!(cage().load_component("hello", &bytes, Some(&right)).is_ok());
}

#[test]
fn the_second_load_is_served_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cage = Cage::new(clawcage::EngineOptions {
        cache_dir: Some(dir.path().join("cache")),
        ..test_options()
    })
    .unwrap();
    let bytes = component_bytes(HELLO);
    assert_eq!(
        cage.load_component("hello", &bytes, None)
            .unwrap()
            .cache_outcome(),
        CacheOutcome::Miss
    );
    assert_eq!(
        cage.load_component("hello", &bytes, None)
            .unwrap()
            .cache_outcome(),
        CacheOutcome::Hit
    );
    // A corrupted artifact is discarded and recompiled, never trusted.
    for entry in std::fs::read_dir(dir.path().join("cache")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    assert_eq!(
        cage.load_component("hello", &bytes, None)
            .unwrap()
            .cache_outcome(),
        CacheOutcome::Miss
    );
}

#[cfg(unix)]
#[test]
fn a_cache_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = Cage::new(clawcage::EngineOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        ..test_options()
    })
    .unwrap_err();
    assert!(err.to_string().contains("writable by other users"), "{err}");
}

#[test]
fn manifests_resolve_paths_and_refuse_what_this_host_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(HELLO, dir.path().join("hello.wasm")).unwrap();
    let manifest = clawcage::Manifest::from_toml(
        "name = \"hello\"\n[component]\npath = \"hello.wasm\"\n[limits]\ndeadline_ms = 1234\n",
    )
    .unwrap();
    let agent = cage().load_manifest(&manifest, dir.path()).unwrap();
    assert_eq!(agent.limits().deadline_ms, 1234);

    let registry = clawcage::Manifest::from_toml(
        "name = \"hello\"\n[component]\nregistry = \"acme/hello@1.0.0\"\n",
    )
    .unwrap();
    assert!(matches!(
        cage().load_manifest(&registry, dir.path()),
        Err(LoadError::Unsupported(_))
    ));
    let fuel = clawcage::Manifest::from_toml(
        "name = \"hello\"\n[component]\npath = \"hello.wasm\"\n[limits]\nfuel = 10\n",
    )
    .unwrap();
    let err = cage().load_manifest(&fuel, dir.path()).unwrap_err();
    assert!(err.to_string().contains("fuel"), "{err}");
    let missing =
        clawcage::Manifest::from_toml("name = \"hello\"\n[component]\npath = \"nope.wasm\"\n")
            .unwrap();
    assert!(matches!(
        cage().load_manifest(&missing, dir.path()),
        Err(LoadError::Io { .. })
    ));
}
