//! Private network namespaces for tests that need the kernel in the path
//! (packet loss, a NAT gateway): each is made by the test and deleted on drop.

use std::process::Command;

/// A network namespace of our own, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: &str) -> Option<Netns> {
        let ok = |args: &[&str]| Command::new("ip").args(args).output().is_ok_and(|o| o.status.success());
        if !ok(&["netns", "add", name]) {
            return None;
        }
        let ns = Netns { name: name.into() };
        ns.run("ip", &["link", "set", "lo", "up"]).then_some(ns)
    }

    /// Runs a command inside; true on success.
    pub fn run(&self, program: &str, args: &[&str]) -> bool {
        Command::new("ip").args(["netns", "exec", &self.name, program]).args(args).output().is_ok_and(|o| o.status.success())
    }

    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
