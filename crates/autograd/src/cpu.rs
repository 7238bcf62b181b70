//! What the CPU is, for the kernels that pick an instruction set at run time
//! and for every benchmark figure (the machines this runs on differ: a Zen 4
//! runs a 512-bit instruction as two 256-bit halves, a Zen 3 has none, a
//! Zen 5 or a recent Xeon has full-width ones).

/// Vendor, family, model and name from `/proc/cpuinfo` (empty where it is
/// missing), and the instruction sets the kernels choose between, as
/// detected at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    /// `vendor_id`, e.g. `AuthenticAMD`.
    pub vendor: String,
    /// `cpu family`, e.g. `25` (AMD Zen 3 and Zen 4).
    pub family: String,
    /// `model`, e.g. `17` (Zen 4 EPYC) or `1` (Zen 3 EPYC).
    pub model: String,
    /// `model name`.
    pub name: String,
    /// The detected features that matter to the kernels, in this order:
    /// `avx2`, `fma`, `avx512f`, `avx512bf16`.
    pub features: Vec<&'static str>,
}

/// The first value of `key` in a `/proc/cpuinfo` text.
fn field(cpuinfo: &str, key: &str) -> String {
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

/// This machine's [`CpuInfo`].
pub fn info() -> CpuInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut features = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let detected = [
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512bf16", is_x86_feature_detected!("avx512bf16")),
        ];
        features.extend(detected.iter().filter(|(_, on)| *on).map(|(name, _)| *name));
    }
    CpuInfo {
        vendor: field(&cpuinfo, "vendor_id"),
        family: field(&cpuinfo, "cpu family"),
        model: field(&cpuinfo, "model"),
        name: field(&cpuinfo, "model name"),
        features,
    }
}

/// One line for a log or a benchmark: `CPU: AMD EPYC (AuthenticAMD, cpu
/// family 25, model 1; avx2 fma)`.
pub fn describe() -> String {
    let cpu = info();
    format!(
        "CPU: {} ({}, cpu family {}, model {}; {})",
        cpu.name,
        cpu.vendor,
        cpu.family,
        cpu.model,
        cpu.features.join(" ")
    )
}

/// Bytes of L2 cache per core, from `/sys/devices/system/cpu/cpu0/cache`
/// (1 MiB where it cannot be read): the GEMM sizes its blocks by it. Read
/// once per process.
pub fn l2_cache_bytes() -> usize {
    static L2: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *L2.get_or_init(|| read_l2_cache_bytes().unwrap_or(1 << 20))
}

/// The size of the first level-2 data or unified cache that sysfs lists.
fn read_l2_cache_bytes() -> Option<usize> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    for index in 0..8 {
        let read = |name: &str| std::fs::read_to_string(dir.join(format!("index{index}/{name}")));
        let (Ok(level), Ok(kind), Ok(size)) = (read("level"), read("type"), read("size")) else {
            continue;
        };
        if level.trim() == "2" && kind.trim() != "Instruction" {
            return parse_cache_size(size.trim());
        }
    }
    None
}

/// `2048K` or `2M` (sysfs's cache sizes) in bytes.
fn parse_cache_size(text: &str) -> Option<usize> {
    let (digits, unit) = match text.strip_suffix('K') {
        Some(digits) => (digits, 1 << 10),
        None => match text.strip_suffix('M') {
            Some(digits) => (digits, 1 << 20),
            None => (text, 1),
        },
    };
    digits
        .parse::<usize>()
        .ok()
        .map(|n| n * unit)
        .filter(|&n| n > 0)
}
