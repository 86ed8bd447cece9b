// Kernel cost of appending to many files at once, as the recording disk thread does:
// 1,000 files, 10 s of 8 kHz stereo 16-bit each, written round-robin in CHUNK-byte writes.
//   rustc -O -o /tmp/write_cost benchmarks/recording/write_cost.rs && taskset -c 0 /tmp/write_cost plain 1600
// MODE: plain (append), falloc (fallocate first), falloc_keep (FALLOC_FL_KEEP_SIZE), trunc (ftruncate first).
// Prints CPU time (user + system, from /proc/self/stat) per write and per byte.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::time::Instant;
extern "C" { fn fallocate(fd: i32, mode: i32, off: i64, len: i64) -> i32; fn ftruncate(fd: i32, len: i64) -> i32; }
fn main() {
    let mode = std::env::args().nth(1).unwrap();
    let chunk: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let files = 1000;
    let total_per_file = 32000 * 10; // 10 s of 8 kHz stereo
    let dir = format!("/tmp/wexp/d-{mode}-{chunk}");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut fs: Vec<File> = (0..files).map(|i| OpenOptions::new().write(true).create(true).open(format!("{dir}/{i}.wav")).unwrap()).collect();
    for f in &fs {
        match mode.as_str() {
            "falloc" => unsafe { assert_eq!(fallocate(f.as_raw_fd(), 0, 0, total_per_file as i64), 0); },
            "falloc_keep" => unsafe { assert_eq!(fallocate(f.as_raw_fd(), 1, 0, total_per_file as i64), 0); },
            "trunc" => unsafe { assert_eq!(ftruncate(f.as_raw_fd(), total_per_file as i64), 0); },
            _ => {}
        }
    }
    let buf = vec![7u8; chunk];
    let t = Instant::now();
    let cpu0 = cpu();
    let rounds = total_per_file / chunk;
    for _ in 0..rounds { for f in fs.iter_mut() { f.write_all(&buf).unwrap(); } }
    let cpu1 = cpu();
    let writes = rounds * files;
    println!("{mode} chunk {chunk}: {writes} writes, {:.2} us cpu/write, {:.3} ns cpu/byte, wall {:?}", (cpu1-cpu0)*1e6/writes as f64, (cpu1-cpu0)*1e9/(writes*chunk) as f64, t.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}
fn cpu() -> f64 { let s = std::fs::read_to_string("/proc/self/stat").unwrap(); let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect(); (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0 }
