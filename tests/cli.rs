//! The `vault` binary end to end: the README's main job, key lifecycle and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn vault(data_dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vault"))
        .args(args)
        .env("VAULT_DATA_DIR", data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Written on a thread of its own while the output is read: an input and an output larger
    // than a pipe would otherwise each wait for the other.
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // The command may reject its arguments and exit before reading its input.
        if let Err(e) = input.write_all(&stdin) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

const CTX: &str = r#"{"organization_id":"org_1"}"#;

#[test]
fn encrypt_then_decrypt_round_trips_and_creates_a_private_key_ring() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault-data");
    let sealed = vault(&data, &["encrypt", "--context", CTX], b"secret\n");
    assert!(
        sealed.status.success(),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    assert!(!sealed.stdout.windows(6).any(|w| w == b"secret"));
    let opened = vault(&data, &["decrypt", "--show-context"], &sealed.stdout);
    assert!(
        opened.status.success(),
        "{}",
        String::from_utf8_lossy(&opened.stderr)
    );
    assert_eq!(opened.stdout, b"secret\n");
    assert_eq!(String::from_utf8_lossy(&opened.stderr).trim(), CTX);

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("keyring-root.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The binary form works too, and associated data must match.
    let bin = vault(
        &data,
        &["encrypt", "--context", CTX, "--binary", "--aad", "row-7"],
        b"\x00\xffbin",
    );
    assert!(bin.stdout.starts_with(b"VLTE"));
    assert_eq!(
        vault(&data, &["decrypt", "--aad", "row-7"], &bin.stdout).stdout,
        b"\x00\xffbin"
    );
    let wrong = vault(&data, &["decrypt", "--aad", "row-8"], &bin.stdout);
    assert_eq!(wrong.status.code(), Some(4));
    assert!(wrong.stdout.is_empty());
}

/// A large input is streamed however it comes: a file is read at any offset on every core (after
/// the 8 MiB read to tell), standard input on one thread and sealed on another. Each opens to
/// the same bytes, and with `--range` to exactly the bytes asked for.
#[test]
fn a_large_input_streams_from_a_file_and_from_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault-data");
    let plaintext: Vec<u8> = (0..(9usize << 20) + 70_001)
        .map(|i| u8::try_from(i * 7 % 251).unwrap())
        .collect();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, &plaintext).unwrap();
    let plain = plain.to_str().unwrap();
    let streamed = |sealed: &[u8]| sealed.starts_with(b"VLTE") && sealed[5..7] == [0, 4];
    let cases: [(&str, &[&str], &[u8]); 3] = [
        ("a file", &["--in", plain], b""),
        ("a file, --stream", &["--in", plain, "--stream"], b""),
        ("standard input", &[], &plaintext),
    ];
    for (how, args, stdin) in cases {
        let mut all = vec!["encrypt", "--context", CTX];
        all.extend_from_slice(args);
        let sealed = vault(&data, &all, stdin);
        assert!(
            sealed.status.success(),
            "{how}: {}",
            String::from_utf8_lossy(&sealed.stderr)
        );
        assert!(streamed(&sealed.stdout), "{how}");
        let opened = vault(&data, &["decrypt"], &sealed.stdout);
        assert!(opened.status.success(), "{how}");
        assert!(opened.stdout == plaintext, "{how}: opened to other bytes");
        let file = dir.path().join("sealed.vlt");
        std::fs::write(&file, &sealed.stdout).unwrap();
        let file = file.to_str().unwrap();
        let ranged = vault(
            &data,
            &["decrypt", "--range", "8388000-8458000", "--in", file],
            b"",
        );
        assert!(
            ranged.stdout == plaintext[8_388_000..=8_458_000],
            "{how}: the range: {} bytes, {}",
            ranged.stdout.len(),
            String::from_utf8_lossy(&ranged.stderr)
        );
    }
}

#[test]
fn rotate_rewrap_and_destroy() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let old = vault(data, &["encrypt", "--context", CTX], b"v1 data").stdout;
    assert_eq!(vault(data, &["keys", "rotate"], b"").stdout, b"v2\n");
    let rewrapped = vault(data, &["keys", "rewrap"], &old);
    assert!(rewrapped.status.success());
    assert!(
        vault(data, &["kv", "list", "-e", "prod"], b"")
            .status
            .success()
    );
    // Nothing in the store is under v1, but it was the primary a moment ago: writes sealed
    // under it may still be landing, so only explicit consent destroys it now.
    let refused = vault(data, &["keys", "destroy", "1"], b"");
    assert_eq!(refused.status.code(), Some(7));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("until moments ago"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Without an object store nothing can be counted: a missing store is not an empty one.
    let db = data.join("vault.db");
    std::fs::rename(&db, data.join("elsewhere.db")).unwrap();
    let uncounted = vault(data, &["keys", "destroy", "1"], b"");
    assert_eq!(uncounted.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&uncounted.stderr).contains("no object store"));
    std::fs::rename(data.join("elsewhere.db"), &db).unwrap();
    assert!(
        vault(data, &["keys", "destroy", "1", "--yes-destroy-data"], b"")
            .status
            .success()
    );

    assert_eq!(
        vault(data, &["decrypt"], &rewrapped.stdout).stdout,
        b"v1 data"
    );
    let gone = vault(data, &["decrypt"], &old);
    assert_eq!(
        gone.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
    let status = String::from_utf8(vault(data, &["keys", "status"], b"").stdout).unwrap();
    assert!(
        status.contains("destroyed") && status.contains("primary"),
        "{status}"
    );
}

#[test]
fn bad_input_is_a_clear_error_with_its_own_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &[u8], &str); 4] = [
        (
            &["encrypt", "--context", r#"{"a":"1","a":"2"}"#],
            b"x",
            "duplicate key context key \"a\"",
        ),
        (
            &["encrypt", "--context", r#"{"a":{"b":"c"}}"#],
            b"x",
            "is not a string",
        ),
        (&["decrypt"], b"not base64!", "not canonical base64"),
        (&["decrypt"], b"VkxURQ==", "truncated"),
    ];
    let no_ring = vault(dir.path(), &["keys", "rotate"], b"");
    assert_eq!(no_ring.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&no_ring.stderr).contains("no key ring"));
    for (args, stdin, message) in cases {
        let out = vault(dir.path(), args, stdin);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    // Nothing was created by any of it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn keys_commands_act_on_the_ring_of_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let cfg = data.join("vault.toml");
    std::fs::write(
        &cfg,
        "default = \"main\"\n[providers.main]\ntype = \"managed\"\nring = \"tenant\"\n\
         [providers.spare]\ntype = \"managed\"\nring = \"spare\"\ncheck_interval_ms = 50\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    // A command that seals creates the configuration's rings.
    let sealed = vault(data, &["--config", c, "encrypt", "--context", CTX], b"x");
    assert!(sealed.status.success());
    assert_eq!(
        vault(data, &["--config", c, "keys", "rotate"], b"").stdout,
        b"v2\n"
    );
    let status = vault(data, &["--config", c, "keys", "status"], b"");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.starts_with("ring tenant (generation 1,"), "{status}");
    assert!(!data.join("keyring-root.json").exists());
    assert_eq!(
        vault(
            data,
            &["--config", c, "keys", "rotate", "--provider", "spare"],
            b""
        )
        .stdout,
        b"v2\n"
    );
    let unknown = vault(
        data,
        &["--config", c, "keys", "rotate", "--provider", "x"],
        b"",
    );
    assert_eq!(unknown.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("managed providers: main, spare"));
}

/// Whatever command first creates the data directory, it is private: 0700, its files 0600.
#[test]
fn a_fresh_data_directory_is_private_whichever_command_creates_it() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let commands: [&[&str]; 3] = [
        &["apikey", "create", "-e", "prod", "--name", "first"],
        &["kv", "list", "-e", "prod"],
        &["encrypt", "--context", CTX],
    ];
    for args in commands {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("fresh");
        let out = vault(&data, args, b"x");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(mode(&data), 0o700, "{args:?}");
        let mut files = 0;
        for entry in std::fs::read_dir(&data).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{args:?}: {}", path.display());
            files += 1;
        }
        assert!(files >= 1, "{args:?} created no file");
    }
}

/// A retention so long that the cutoff would overflow is refused as a usage error; it never
/// wraps around to a cutoff in the future that would purge every deleted object at once.
#[test]
fn purge_refuses_a_retention_that_overflows_and_purges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let created = vault(
        data,
        &[
            "kv",
            "create",
            "-e",
            "prod",
            "--name",
            "n",
            "--context",
            CTX,
            "--value",
            "v",
        ],
        b"",
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let shown = String::from_utf8(created.stdout).unwrap();
    let id = shown
        .lines()
        .find_map(|l| l.strip_prefix("id "))
        .unwrap()
        .trim();
    assert!(
        vault(data, &["kv", "delete", "-e", "prod", id], b"")
            .status
            .success()
    );

    for days in ["213503982", "4294967295", "36501"] {
        let out = vault(data, &["kv", "purge", "--retention-days", days], b"");
        assert_eq!(out.status.code(), Some(2), "{days}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("retention-days"), "{days}: {err}");
    }
    let longest = vault(data, &["kv", "purge", "--retention-days", "36500"], b"");
    assert!(longest.status.success());
    assert!(String::from_utf8_lossy(&longest.stdout).contains("purged 0"));
    // The object deleted a moment ago was still there for a purge that keeps nothing.
    let now = vault(data, &["kv", "purge", "--retention-days", "0"], b"");
    assert!(String::from_utf8_lossy(&now.stdout).contains("purged 1"));
}

/// A provider whose rule was handed to another provider may still wrap data: it is not taken
/// for one no rule has used (not removed or changed without the usual guards), while one that
/// was never routed goes at once, without connecting to its key.
#[test]
fn a_provider_that_lost_its_rule_keeps_its_guards() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let arn = |n: u8| {
        format!("arn:aws:kms:us-east-1:111122223333:key/0000000{n}-12ab-34cd-56ef-1234567890ab")
    };
    for (name, n) in [("first", 1), ("second", 2), ("spare", 3)] {
        let key = arn(n);
        let out = vault(
            data,
            &[
                "byok",
                "provider",
                "add",
                name,
                "--type",
                "aws-kms",
                "--key-id",
                &key,
                "--unverified",
            ],
            b"",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for provider in ["first", "second"] {
        let out = vault(
            data,
            &[
                "byok",
                "set",
                "--match",
                "organization_id=org_x",
                "--provider",
                provider,
                "--unverified",
            ],
            b"",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let removed = vault(data, &["byok", "provider", "remove", "first"], b"");
    assert_eq!(removed.status.code(), Some(7));
    assert!(
        String::from_utf8_lossy(&removed.stderr).contains("was routed to until moments ago"),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let key = arn(9);
    let changed = vault(
        data,
        &[
            "byok",
            "provider",
            "update",
            "first",
            "--type",
            "aws-kms",
            "--key-id",
            &key,
            "--unverified",
        ],
        b"",
    );
    assert_eq!(changed.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&changed.stderr).contains("has had contexts sent to it"));
    let spare = vault(data, &["byok", "provider", "remove", "spare"], b"");
    assert!(
        spare.status.success(),
        "{}",
        String::from_utf8_lossy(&spare.stderr)
    );
    let listed = String::from_utf8(vault(data, &["byok", "provider", "list"], b"").stdout).unwrap();
    assert!(
        listed.contains("first") && listed.contains("second") && !listed.contains("spare"),
        "{listed}"
    );
}
