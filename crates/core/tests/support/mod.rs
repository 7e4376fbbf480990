//! Shared harness of the goldenscript scenario tests: echoing commands in multi-command
//! blocks, one `#[test]` per script, and the check that no script goes without a test.

use std::fmt::Write as _;

/// In a block of several commands, each command is printed with its output indented below it,
/// so the golden file shows which output belongs to which command; a single command prints its
/// output alone.
pub fn echo(enabled: bool, command: &goldenscript::Command, out: String) -> Result<String, std::fmt::Error> {
    if !enabled {
        return Ok(out);
    }
    let mut echoed = format!("{command}\n");
    for line in out.lines() {
        writeln!(echoed, "  {line}")?;
    }
    Ok(echoed)
}

/// Whether a block echoes its commands (see [`echo`]).
pub fn echo_block(block: &goldenscript::Block) -> bool {
    block.commands.len() > 1
}

/// Asserts the scripts on disk in `dir` are exactly `listed`: a script added without a test
/// would otherwise never run.
pub fn assert_every_script_listed(dir: &str, listed: &[&str]) -> std::io::Result<()> {
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    on_disk.sort();
    let mut listed: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    Ok(())
}

/// One `#[test]` per script in `$dir`, each with a fresh `$runner`, so a failure names its
/// scenario; plus `every_script_has_a_test`.
#[macro_export]
macro_rules! scripts {
    ($runner:ty, $dir:expr; $($(#[$doc:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            #[test]
            fn $name() -> std::io::Result<()> {
                goldenscript::run(&mut <$runner>::default(), format!("{}/{}", $dir, stringify!($name)))
            }
        )*

        /// Proves every script in the directory has a test above.
        #[test]
        fn every_script_has_a_test() -> std::io::Result<()> {
            support::assert_every_script_listed($dir, &[$(stringify!($name)),*])
        }
    };
}
