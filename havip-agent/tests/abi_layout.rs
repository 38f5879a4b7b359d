//! The Rust mirror in havip-common must match the C ABI exactly: every
//! shared struct's size and every field's offset is compared with the BTF
//! clang wrote into the compiled object, and the counter enums with the
//! header's declaration order.

use std::collections::HashMap;

use havip_common::{layouts, GlobalCounter, SubnetCounter, VipCounter};
use object::{Object, ObjectSection};

const BTF_KIND_ARRAY: u32 = 3;
const BTF_KIND_STRUCT: u32 = 4;

struct Member {
    name: String,
    bit_offset: u32,
}

struct BtfStruct {
    size: u32,
    members: Vec<Member>,
}

/// The structs of a BTF blob, by name, and array lengths by struct member.
/// Only as much of the BTF format as this test needs: every kind's record
/// length, so the walk stays aligned.
fn parse_btf(btf: &[u8]) -> HashMap<String, BtfStruct> {
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    assert_eq!(u16::from_le_bytes([btf[0], btf[1]]), 0xeb9f, "BTF magic");
    let hdr_len = u32_at(btf, 4) as usize;
    let (type_off, type_len) = (u32_at(btf, 8) as usize, u32_at(btf, 12) as usize);
    let str_off = u32_at(btf, 16) as usize;
    let types = &btf[hdr_len + type_off..hdr_len + type_off + type_len];
    let strings = &btf[hdr_len + str_off..];
    let name = |off: u32| {
        let s = &strings[off as usize..];
        String::from_utf8_lossy(&s[..s.iter().position(|&c| c == 0).unwrap()]).into_owned()
    };

    let mut structs = HashMap::new();
    let mut pos = 0;
    while pos < types.len() {
        let (name_off, info, size) = (u32_at(types, pos), u32_at(types, pos + 4), u32_at(types, pos + 8));
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kflag = info >> 31 == 1;
        pos += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,                 // INT, VAR, DECL_TAG
            BTF_KIND_ARRAY => 12,             // ARRAY
            BTF_KIND_STRUCT | 5 => 12 * vlen, // STRUCT, UNION
            6 | 13 => 8 * vlen,               // ENUM, FUNC_PROTO
            15 | 19 => 12 * vlen,             // DATASEC, ENUM64
            _ => 0,
        };
        if kind == BTF_KIND_STRUCT {
            let members = (0..vlen)
                .map(|i| {
                    let m = pos + 12 * i;
                    let off = u32_at(types, m + 8);
                    Member {
                        name: name(u32_at(types, m)),
                        bit_offset: if kflag { off & 0xff_ffff } else { off },
                    }
                })
                .collect();
            structs.insert(name(name_off), BtfStruct { size, members });
        }
        pos += extra;
    }
    structs
}

fn object_btf() -> Vec<u8> {
    let obj = object::File::parse(havip_ebpf::HAVIP_OBJ).expect("the embedded object is ELF");
    obj.section_by_name(".BTF").expect("the object has BTF (-g)").data().unwrap().to_vec()
}

#[test]
fn every_shared_struct_matches_the_btf_of_the_object() {
    let btf = parse_btf(&object_btf());
    for (c_name, rust_size, fields) in layouts() {
        let s = btf.get(c_name).unwrap_or_else(|| panic!("struct {c_name} is not in the object's BTF"));
        assert_eq!(s.size as usize, rust_size, "size of struct {c_name}");
        let c_fields: Vec<(&str, usize)> =
            s.members.iter().map(|m| (m.name.as_str(), (m.bit_offset / 8) as usize)).collect();
        assert_eq!(c_fields, fields, "fields and offsets of struct {c_name}");
    }
}

/// Names in declaration order of a C enum in the ABI header.
fn header_enum(name: &str) -> Vec<String> {
    let header = include_str!("../../havip-ebpf/bpf/havip_abi.h");
    let start =
        header.find(&format!("enum {name} {{")).unwrap_or_else(|| panic!("enum {name} in the header"));
    let body = &header[start..start + header[start..].find("};").unwrap()];
    body.lines()
        .skip(1)
        .filter_map(|l| {
            // A comment's continuation lines start with '*'.
            l.trim().split([',', ' ', '=']).next().filter(|t| !t.is_empty() && !t.starts_with(['/', '*']))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn counter_enums_match_the_header_in_order() {
    let vip: Vec<String> =
        VipCounter::ALL.iter().map(|c| format!("VIP_CTR_{}", c.name().to_uppercase())).collect();
    assert_eq!(header_enum("vip_counter"), [vip, vec!["VIP_CTR__MAX".into()]].concat());
    for (i, c) in VipCounter::ALL.iter().enumerate() {
        assert_eq!(*c as usize, i);
    }
    let global: Vec<String> =
        GlobalCounter::ALL.iter().map(|c| format!("GLB_CTR_{}", c.name().to_uppercase())).collect();
    assert_eq!(header_enum("global_counter"), [global, vec!["GLB_CTR__MAX".into()]].concat());
    let subnet: Vec<String> =
        SubnetCounter::ALL.iter().map(|c| format!("SUBNET_CTR_{}", c.name().to_uppercase())).collect();
    assert_eq!(header_enum("subnet_counter"), [subnet, vec!["SUBNET_CTR__MAX".into()]].concat());
    for (i, c) in SubnetCounter::ALL.iter().enumerate() {
        assert_eq!(*c as usize, i);
    }
}

#[test]
fn the_broadcast_domain_structs_are_in_the_btf() {
    // layouts() lists them; this says so by name, so dropping one from
    // layouts() (or the object losing one) is caught.
    let btf = parse_btf(&object_btf());
    let names: Vec<&str> = layouts().iter().map(|(n, _, _)| *n).collect();
    for s in ["bcast_vnic", "bcast_subnet", "bcast_prefix", "bcast_remotes", "flood_meta", "subnet_counters"]
    {
        assert!(names.contains(&s), "layouts() covers struct {s}");
        assert!(btf.contains_key(s), "struct {s} is in the object's BTF");
    }
}
