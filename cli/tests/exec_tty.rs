//! `lbc` on a real pseudo-terminal (expectrl): `login` asks for the password
//! without echo, and `exec -it` gives a shell in a replica with raw mode
//! (Ctrl-C reaches the remote command, not lbc), window size changes, and
//! the remote exit code as lbc's.

mod common;

use std::time::Duration;

use common::{Up, ADMIN_PASSWORD};
use expectrl::{ControlCode, Session, WaitStatus};

fn exit_code(session: &Session) -> i32 {
    match session.get_process().wait().expect("wait for lbc") {
        WaitStatus::Exited(_, code) => code,
        other => panic!("lbc did not exit normally: {other:?}"),
    }
}

#[test]
fn login_prompt_and_exec_it_through_a_pty() {
    let image = lb_testing::busybox_image();
    let up = Up::start();

    // The password prompt: no echo, the password never on the screen.
    let cmd = up.lbc(&[
        "--context",
        "typed",
        "login",
        "--api",
        &up.url,
        "-u",
        "admin",
    ]);
    let mut p = Session::spawn(cmd).expect("spawn lbc login on a pty");
    p.set_expect_timeout(Some(Duration::from_secs(30)));
    p.expect("Password: ").expect("a password prompt");
    p.send_line(ADMIN_PASSWORD).unwrap();
    let seen = p.expect("Logged in as admin").expect("logged in");
    assert!(
        !String::from_utf8_lossy(seen.before()).contains(ADMIN_PASSWORD),
        "the password was echoed"
    );
    assert_eq!(exit_code(&p), 0);

    up.ok(&["project", "create", "tty"]);
    up.ok(&["project", "use", "tty"]);
    up.ok(&[
        "service",
        "create",
        "box",
        "--image",
        image,
        "-m",
        "16",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do sleep 1; done",
    ]);
    up.wait_running("box", 1);

    let cmd = up.lbc(&["exec", "-it", "box", "--", "/bin/busybox", "sh"]);
    let mut p = Session::spawn(cmd).expect("spawn lbc exec -it on a pty");
    p.set_expect_timeout(Some(Duration::from_secs(30)));
    p.expect("# ").expect("a shell prompt from the replica");

    // Window size: what the terminal says reaches the remote TTY.
    for (cols, rows) in [(100u16, 30u16), (132, 43)] {
        p.get_process_mut().set_window_size(cols, rows).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        p.send_line("stty size").unwrap();
        p.expect(format!("{rows} {cols}").as_str())
            .unwrap_or_else(|e| panic!("the remote size did not follow to {cols}x{rows}: {e}"));
    }

    // Raw mode: Ctrl-C goes to the remote command, lbc stays.
    p.send_line("sleep 60").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    p.send(ControlCode::EndOfText).unwrap();
    p.send_line("echo still $((40+2))").unwrap();
    p.expect("still 42").expect("the shell survived Ctrl-C");
    assert!(p.is_alive().unwrap(), "Ctrl-C killed lbc");

    // The remote exit code is lbc's.
    p.send_line("exit 5").unwrap();
    assert_eq!(exit_code(&p), 5);
}
