//! Two software YubiKeys in the two vpcd readers, found by serial and
//! reported by `ykman` as YubiKeys 5.

use kleidia_tests::card::{info_line, lock_blocking, open, ykman, VirtualYubiKey};
use yubikey::{Error, Serial, YubiKey};

#[test]
fn two_virtual_keys_are_opened_by_serial_and_ykman_info_reports_a_yubikey_5() {
    let _l = lock_blocking();
    let dir = tempfile::tempdir().unwrap();
    let mut a = VirtualYubiKey::plug(dir.path(), 11111111, "5.4.3", 0).unwrap();
    let mut b = VirtualYubiKey::plug(dir.path(), 22222222, "5.7.1", 1).unwrap();

    let ya = open(11111111);
    assert_eq!(ya.serial(), Serial(11111111));
    assert_eq!(ya.version().to_string(), "5.4.3");
    assert_eq!(ya.name(), "Virtual PCD 00 00");
    drop(ya);
    let yb = open(22222222);
    assert_eq!(yb.version().to_string(), "5.7.1");
    assert_eq!(yb.name(), "Virtual PCD 00 01");
    drop(yb);
    assert!(
        YubiKey::open().is_err(),
        "open() refuses to choose between two keys"
    );
    assert!(matches!(
        YubiKey::open_by_serial(Serial(33333333)),
        Err(Error::NotFound)
    ));

    let info = ykman(a.reader_name(), &["info"]).unwrap();
    assert!(
        info_line(&info, "Device type:").contains("YubiKey 5"),
        "{info}"
    );
    assert_eq!(
        info_line(&info, "Serial number:"),
        "Serial number: 11111111"
    );
    assert_eq!(
        info_line(&info, "Firmware version:"),
        "Firmware version: 5.4.3"
    );
    let info = ykman(b.reader_name(), &["info"]).unwrap();
    assert_eq!(
        info_line(&info, "Serial number:"),
        "Serial number: 22222222"
    );

    a.stop().unwrap();
    b.stop().unwrap();
}
