//! The tally a vector checker returns.

/// Outcome of checking the cases of one vector file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Cases whose every check held.
    pub passed: usize,
    /// Cases where a check failed; each has a line in `failures`.
    pub failed: usize,
    /// Cases that were not compared (documented reference quirks), with the reason in `skips`.
    pub skipped: usize,
    /// One line per failed case: case index, name, what differed, expected and actual hex.
    pub failures: Vec<String>,
    /// One line per skipped case, saying why.
    pub skips: Vec<String>,
}

impl Report {
    /// Records a passing case.
    pub fn pass(&mut self) {
        self.passed += 1;
    }

    /// Records a failing case with a line saying what differed.
    pub fn fail(&mut self, line: String) {
        self.failed += 1;
        self.failures.push(line);
    }

    /// Records a case that was deliberately not compared.
    pub fn skip(&mut self, line: String) {
        self.skipped += 1;
        self.skips.push(line);
    }

    /// Adds another report's counts and lines to this one.
    pub fn merge(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.failures.extend(other.failures);
        self.skips.extend(other.skips);
    }

    /// Records a check: passes when `result` is `Ok`, fails with the error line otherwise.
    pub fn record(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => self.pass(),
            Err(line) => self.fail(line),
        }
    }
}
