//! `GET /host/info`, the host view's Devices and Disks panels, read from sysfs as the Go agent's
//! jaypipes/ghw does (`ghw/pci.go`, `ghw/disk.go`): PCI devices from `/sys/bus/pci/devices`
//! with names from `pci.ids` when the image has one (else the ids), and block devices from
//! `/sys/block`, virtual ones left out. A board without a PCI bus has no devices, not an error.

use serde::Serialize;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct HostInfo {
    #[serde(rename = "PCIDevices")]
    pub pci_devices: Vec<PciDevice>,
    #[serde(rename = "PhysicalDisks")]
    pub physical_disks: Vec<PhysicalDisk>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PciDevice {
    pub vendor: String,
    pub name: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PhysicalDisk {
    pub vendor: String,
    /// Bytes.
    pub size: u64,
}

/// Where pcidb (ghw's PCI database) looks, in order.
const PCI_IDS: [&str; 2] = ["usr/share/hwdata/pci.ids", "usr/share/misc/pci.ids"];
/// `pci.ids` is about 1.4 MB; a line is under 200 bytes.
const MAX_PCI_IDS: u64 = 16 * 1024 * 1024;
const MAX_LINE: u64 = 1024;
/// sysfs attributes are one short line.
const MAX_ATTRIBUTE: u64 = 4096;
/// The most devices or disks reported.
const MAX_ENTRIES: usize = 1024;
/// Block devices that are not hardware: loop files, RAM disks, compressed swap, device mapper.
const VIRTUAL_BLOCK: [&str; 4] = ["loop", "ram", "zram", "dm-"];

/// What `/host/info` answers, for the host whose root file system is `root` (`/` but in tests).
pub fn info(root: &Path) -> io::Result<HostInfo> {
    Ok(HostInfo {
        pci_devices: pci_devices(root)?,
        physical_disks: disks(root)?,
    })
}

fn pci_devices(root: &Path) -> io::Result<Vec<PciDevice>> {
    let dir = root.join("sys/bus/pci/devices");
    let ids: Vec<(String, String)> = match entries(&dir) {
        Ok(names) => names
            .iter()
            .map(|name| {
                let id = |file: &str| attribute(&dir.join(name).join(file)).unwrap_or_default();
                (id("vendor"), id("device"))
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let database = PCI_IDS
        .iter()
        .find_map(|path| fs::File::open(root.join(path)).ok());
    let names = match database {
        Some(file) => pci_names(BufReader::new(file.take(MAX_PCI_IDS)), &ids),
        None => vec![(None, None); ids.len()],
    };
    Ok(ids
        .into_iter()
        .zip(names)
        .map(|((vendor, device), (vendor_name, device_name))| PciDevice {
            vendor: vendor_name.unwrap_or(vendor),
            name: device_name.unwrap_or(device),
        })
        .collect())
}

/// The vendor and device names of `ids` (`0x8086`, `0x1237`, as sysfs has them) in a
/// `pci.ids` file: vendor lines `8086  Intel Corporation`, device lines under them with a tab.
fn pci_names(
    mut ids_file: impl BufRead,
    ids: &[(String, String)],
) -> Vec<(Option<String>, Option<String>)> {
    let bare = |id: &str| id.trim_start_matches("0x").to_ascii_lowercase();
    let wanted: Vec<(String, String)> = ids.iter().map(|(v, d)| (bare(v), bare(d))).collect();
    let mut names = vec![(None, None); ids.len()];
    let mut vendor = String::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut ids_file).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        // Classes (`C 03  Display controller`) close the vendor list.
        if text.starts_with("C ") {
            break;
        }
        if let Some(device_line) = text.strip_prefix('\t') {
            if device_line.starts_with('\t') {
                continue;
            }
            if let Some((id, name)) = device_line.split_once("  ") {
                for (i, (v, d)) in wanted.iter().enumerate() {
                    if *v == vendor && d == id {
                        names[i].1 = Some(name.trim().to_owned());
                    }
                }
            }
        } else if let Some((id, name)) = text.split_once("  ") {
            if id.len() == 4 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                vendor = id.to_ascii_lowercase();
                for (i, (v, _)) in wanted.iter().enumerate() {
                    if *v == vendor {
                        names[i].0 = Some(name.trim().to_owned());
                    }
                }
            }
        }
    }
    names
}

fn disks(root: &Path) -> io::Result<Vec<PhysicalDisk>> {
    let dir = root.join("sys/block");
    let mut disks = Vec::new();
    for name in entries(&dir)? {
        if VIRTUAL_BLOCK.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let device = dir.join(&name);
        // `size` counts 512-byte sectors whatever the device's block size.
        let sectors: u64 = attribute(&device.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // SCSI and ATA disks have a vendor; NVMe a model; SD and eMMC cards a name.
        let vendor = ["device/vendor", "device/model", "device/name"]
            .iter()
            .find_map(|file| attribute(&device.join(file)).filter(|v| !v.is_empty()))
            .unwrap_or_else(|| "unknown".to_owned());
        disks.push(PhysicalDisk {
            vendor,
            size: sectors.saturating_mul(512),
        });
    }
    Ok(disks)
}

/// The names in `dir`, sorted, at most [`MAX_ENTRIES`].
fn entries(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
        if names.len() == MAX_ENTRIES {
            break;
        }
    }
    names.sort();
    Ok(names)
}

/// A sysfs attribute's text, trimmed.
fn attribute(path: &Path) -> Option<String> {
    let mut text = String::new();
    fs::File::open(path)
        .ok()?
        .take(MAX_ATTRIBUTE)
        .read_to_string(&mut text)
        .ok()?;
    Some(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    const PCI_IDS_SAMPLE: &str = "# comment\n8086  Intel Corporation\n\t1237  440FX - 82441FX PMC [Natoma]\n\t\t1af4 1100  Qemu virtual machine\n10de  NVIDIA Corporation\n\t1c82  GP107 [GeForce GTX 1050 Ti]\nC 03  Display controller\n\t00  VGA compatible controller\n";

    #[test]
    fn a_pc_with_pci_ids() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "sys/bus/pci/devices/0000:00:00.0/vendor", "0x8086\n");
        write(r, "sys/bus/pci/devices/0000:00:00.0/device", "0x1237\n");
        write(r, "sys/bus/pci/devices/0000:01:00.0/vendor", "0x10de\n");
        write(r, "sys/bus/pci/devices/0000:01:00.0/device", "0x1c82\n");
        write(r, "sys/bus/pci/devices/0000:02:00.0/vendor", "0x1b36\n");
        write(r, "sys/bus/pci/devices/0000:02:00.0/device", "0x000d\n");
        write(r, "usr/share/misc/pci.ids", PCI_IDS_SAMPLE);
        write(r, "sys/block/sda/size", "1953525168\n");
        write(r, "sys/block/sda/device/vendor", "ATA     \n");
        write(r, "sys/block/nvme0n1/size", "2000409264\n");
        write(
            r,
            "sys/block/nvme0n1/device/model",
            "Samsung SSD 970 EVO Plus 1TB\n",
        );
        write(r, "sys/block/loop0/size", "100\n");
        write(r, "sys/block/dm-0/size", "100\n");
        write(r, "sys/block/zram0/size", "100\n");
        write(r, "sys/block/ram0/size", "100\n");
        let info = info(r).unwrap();
        assert_eq!(
            info.pci_devices,
            vec![
                PciDevice {
                    vendor: "Intel Corporation".into(),
                    name: "440FX - 82441FX PMC [Natoma]".into()
                },
                PciDevice {
                    vendor: "NVIDIA Corporation".into(),
                    name: "GP107 [GeForce GTX 1050 Ti]".into()
                },
                PciDevice {
                    vendor: "0x1b36".into(),
                    name: "0x000d".into()
                },
            ]
        );
        assert_eq!(
            info.physical_disks,
            vec![
                PhysicalDisk {
                    vendor: "Samsung SSD 970 EVO Plus 1TB".into(),
                    size: 2000409264 * 512
                },
                PhysicalDisk {
                    vendor: "ATA".into(),
                    size: 1953525168 * 512
                },
            ]
        );
        let json = serde_json::to_string(&info).unwrap();
        assert!(
            json.starts_with(r#"{"PCIDevices":[{"Vendor":"Intel Corporation","Name":"440FX"#),
            "{json}"
        );
        assert!(
            json.contains(
                r#""PhysicalDisks":[{"Vendor":"Samsung SSD 970 EVO Plus 1TB","Size":1024209543168}"#
            ),
            "{json}"
        );
    }

    #[test]
    fn an_arm_board_without_pci_or_pci_ids() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "sys/block/mmcblk0/size", "30777344\n");
        write(r, "sys/block/mmcblk0/device/name", "SE32G\n");
        write(r, "sys/block/mtdblock0/size", "8\n");
        let info = info(r).unwrap();
        assert_eq!(
            serde_json::to_value(&info).unwrap()["PCIDevices"],
            serde_json::json!([])
        );
        assert_eq!(
            info.physical_disks,
            vec![
                PhysicalDisk {
                    vendor: "SE32G".into(),
                    size: 30777344 * 512
                },
                PhysicalDisk {
                    vendor: "unknown".into(),
                    size: 4096
                },
            ]
        );
    }

    #[test]
    fn no_sys_block_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(
            info(root.path()).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
