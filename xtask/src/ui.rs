//! The dashboard's browser journeys of `cargo xtask test`: Debian's Chromium (installed with
//! apt when absent), Playwright for Python in a virtual environment under `target/` (driving
//! that Chromium; it never downloads a browser), and one `ferrohsm-server dev` started with
//! `ui-tests/policy.toml` and the journeys' principals. The journeys run the real CLI too.
//! Screenshots of every page land in `target/ui-screenshots/`. The server is stopped by its PID
//! when the journeys end, whatever their outcome.

use std::path::Path;

use anyhow::Result;

use crate::sdk::{SdkServer, path_string, venv};

/// The journeys' principals (`ui-tests/README.md`).
const PRINCIPALS: &[(&str, &str)] = &[
    ("admin", "admin"),
    ("operator", "operator"),
    ("auditor", "auditor"),
    ("approver1", "admin"),
    ("approver2", "operator"),
];

/// The browser the journeys drive.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Every dashboard journey, against one server.
pub(crate) fn run(root: &Path) -> Result<()> {
    crate::debian::ensure(CHROMIUM, &["chromium", "fonts-dejavu-core"])?;
    let requirements = root.join("ui-tests/requirements.txt");
    let venv = venv(root, "ui-venv", &["-r", &path_string(&requirements)?])?;
    let shots = root.join("target/ui-screenshots");
    if shots.exists() {
        std::fs::remove_dir_all(&shots)?;
    }
    std::fs::create_dir_all(&shots)?;
    let server = SdkServer::start_with(root, "ui-run", "ui-tests/policy.toml", PRINCIPALS)?;
    let cli = path_string(&root.join("target/debug/ferrohsm"))?;
    let shots = path_string(&shots)?;
    let pytest = path_string(&venv.join("bin/pytest"))?;
    server.run(
        root,
        &pytest,
        &["ui-tests", "-q", "-p", "no:cacheprovider"],
        &[
            ("FERROHSM_CLI", &cli),
            ("FERROHSM_CHROMIUM", CHROMIUM),
            ("FERROHSM_SCREENSHOTS", &shots),
            ("PYTHONDONTWRITEBYTECODE", "1"),
        ],
    )
}
