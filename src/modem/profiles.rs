//! What real modules accept, and how the driver chooses its settings from what a modem says.
//!
//! Two halves:
//! - [`PROFILES`]: one row per module family, taken from its public AT manual (cited in
//!   [`Profile::source`]). The simulated modem answers as the row says; a future modem core
//!   can use the same rows to explain a modem's behaviour in logs.
//! - Pure decision functions over the answers to `AT+CNMI=?` and `AT+CPMS=?`
//!   ([`parse_cnmi_test`], [`cnmi_candidates`], [`parse_cpms_test`], [`choose_storage`]) and a
//!   small table of known quirks per model ([`quirks_for`]). They do no I/O, so they are
//!   tested against the manuals' literal answer strings.

use std::fmt;

/// One module family as its AT manual describes it.
#[derive(Debug)]
pub struct Profile {
    /// The name used in config and on the command line (`gsmgw demo --modem sim800`).
    pub id: &'static str,
    /// The module's name for people.
    pub name: &'static str,
    /// The manual the row follows: title, version, sections.
    pub source: &'static str,
    /// `AT+CGMI`.
    pub manufacturer: &'static str,
    /// `AT+CGMM`.
    pub model: &'static str,
    /// `AT+CGMR`.
    pub revision: &'static str,
    /// The lines `ATI` answers.
    pub ati: &'static [&'static str],
    /// The answer to `AT+CNMI=?`, verbatim.
    pub cnmi_test: &'static str,
    /// `+CNMI` after power-on (and after a reboot).
    pub cnmi_power_on: [u8; 5],
    /// The `+CMS ERROR` code for an `AT+CNMI` value outside `cnmi_test`.
    pub cnmi_error: u16,
    /// The answer to `AT+CPMS=?`, verbatim.
    pub cpms_test: &'static str,
    /// Where a status report is stored when `+CNMI` `<ds>` is 2 (the `<mem>` of `+CDSI`).
    pub report_storage: &'static str,
    /// What the module sends on its own after power-on or a reset, in order, with a ready SIM.
    pub boot_urcs: &'static [&'static str],
    /// Whether the module does voice calls at all (the E3372 is a data stick).
    pub voice: bool,
    /// Extra commands the module accepts that the quirk table may send.
    pub accepts: &'static [&'static str],
    /// `AT+CNMI?` reports this `<mode>` whatever was set (firmware that normalises it).
    pub cnmi_reported_mode: Option<u8>,
}

/// 3GPP TS 27.005 without vendor limits: every `+CNMI` value the standard defines.
pub const GENERIC: Profile = Profile {
    id: "generic",
    name: "3GPP TS 27.005 reference modem",
    source: "3GPP TS 27.005 §3.4.1 (+CNMI), §3.2.2 (+CPMS); V.250 for the basic commands",
    manufacturer: "gsmgw",
    model: "gsmgw simulated modem",
    revision: "Revision: sim-1",
    ati: &["gsmgw simulated modem", "Revision: sim-1"],
    cnmi_test: "+CNMI: (0-3),(0-3),(0-3),(0-2),(0,1)",
    cnmi_power_on: [0, 1, 0, 0, 0],
    cnmi_error: 303,
    cpms_test: "+CPMS: (\"SM\",\"ME\",\"MT\"),(\"SM\",\"ME\"),(\"SM\",\"ME\")",
    report_storage: "SM",
    boot_urcs: &["RDY", "+CFUN: 1", "+CPIN: READY", "Call Ready", "SMS Ready"],
    voice: true,
    accepts: &[],
    cnmi_reported_mode: None,
};

/// Every profile the simulated modem can take, [`GENERIC`] first.
pub static PROFILES: &[Profile] = &[
    GENERIC,
    Profile {
        id: "sim800",
        name: "SIMCom SIM800 / SIM800L / SIM800C",
        source: "SIM800 Series_AT Command Manual_V1.09 (2015-08-03): §4.2.8 AT+CNMI (<ds> 0 or \
                 1 only, no +CDSI), §4.2.9 AT+CPMS, §3.2 ATI/AT+CGMM/AT+CGMR, appendix on \
                 unsolicited result codes (RDY, +CFUN, +CPIN, Call Ready, SMS Ready); power-on \
                 +CNMI 2,1,0,0,0 as shipped",
        manufacturer: "SIMCOM_Ltd",
        model: "SIMCOM_SIM800C",
        revision: "Revision:1418B05SIM800C24",
        ati: &["SIM800 R14.18"],
        cnmi_test: "+CNMI: (0-3),(0-3),(0,2),(0,1),(0,1)",
        cnmi_power_on: [2, 1, 0, 0, 0],
        cnmi_error: 302,
        cpms_test: "+CPMS: (\"SM\",\"ME\",\"SM_P\",\"ME_P\",\"MT\"),(\"SM\",\"ME\",\"SM_P\",\"ME_P\",\"MT\"),(\"SM\",\"ME\",\"SM_P\",\"ME_P\",\"MT\")",
        report_storage: "SM",
        boot_urcs: &["RDY", "+CFUN: 1", "+CPIN: READY", "Call Ready", "SMS Ready"],
        voice: true,
        accepts: &[],
        cnmi_reported_mode: None,
    },
    Profile {
        id: "sim900",
        name: "SIMCom SIM900",
        source: "SIM900_AT Commands Manual_V1.07 (2012-12-10): §4.2.8 AT+CNMI (+CDS only for \
                 <ds>=1), §4.2.9 AT+CPMS",
        manufacturer: "SIMCOM_Ltd",
        model: "SIMCOM_SIM900",
        revision: "Revision:1137B09SIM900M64_ST",
        ati: &["SIM900 R11.0"],
        cnmi_test: "+CNMI: (0-3),(0-3),(0,2),(0,1),(0,1)",
        cnmi_power_on: [2, 1, 0, 0, 0],
        cnmi_error: 302,
        cpms_test: "+CPMS: (\"SM\",\"ME\",\"SM_P\",\"ME_P\",\"MT\"),(\"SM\",\"ME\",\"SM_P\",\"ME_P\",\"MT\"),(\"SM\",\"ME\",\"SM_P\",\"ME_P\",\"MT\")",
        report_storage: "SM",
        boot_urcs: &["RDY", "+CFUN: 1", "+CPIN: READY", "Call Ready"],
        voice: true,
        accepts: &[],
        cnmi_reported_mode: None,
    },
    Profile {
        id: "sim7600",
        name: "SIMCom SIM7600 (SIM7500/SIM7600 series)",
        source: "SIM7500_SIM7600 Series_AT Command Manual_V1.08 (2018-04-10): AT+CNMI, \
                 AT+CPMS (\"SR\" status report storage), AT+CGMM/AT+CGMR/ATI; boot URCs RDY, \
                 +CPIN: READY, SMS DONE, PB DONE",
        manufacturer: "SIMCOM INCORPORATED",
        model: "SIMCOM_SIM7600E-H",
        revision: "+CGMR: LE20B04SIM7600M22",
        ati: &[
            "Manufacturer: SIMCOM INCORPORATED",
            "Model: SIMCOM_SIM7600E-H",
            "Revision: SIM7600M22_V2.0",
            "+GCAP: +CGSM",
        ],
        cnmi_test: "+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)",
        cnmi_power_on: [0, 0, 0, 0, 0],
        cnmi_error: 303,
        cpms_test: "+CPMS: (\"ME\",\"MT\",\"SM\",\"SR\"),(\"ME\",\"MT\",\"SM\",\"SR\"),(\"ME\",\"MT\",\"SM\")",
        report_storage: "SR",
        boot_urcs: &["RDY", "+CPIN: READY", "SMS DONE", "PB DONE"],
        voice: true,
        accepts: &[],
        cnmi_reported_mode: None,
    },
    Profile {
        id: "a7670",
        name: "SIMCom A7670 / SIM7670",
        source: "A76XX Series_AT Command Manual_V1.09: AT+CNMI, AT+CPMS, ATI; boot URCs \
                 *ATREADY: 1, +CPIN: READY, SMS DONE, PB DONE",
        manufacturer: "SIMCOM_Ltd",
        model: "A7670E-LASE",
        revision: "+CGMR: A7670M7_V1.11.1",
        ati: &[
            "Manufacturer: SIMCOM INCORPORATED",
            "Model: A7670E-LASE",
            "Revision: A7670M7_V1.11.1",
        ],
        cnmi_test: "+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)",
        cnmi_power_on: [2, 1, 0, 0, 0],
        cnmi_error: 303,
        cpms_test: "+CPMS: (\"SM\",\"ME\"),(\"SM\",\"ME\"),(\"SM\",\"ME\")",
        report_storage: "SM",
        boot_urcs: &["*ATREADY: 1", "+CPIN: READY", "SMS DONE", "PB DONE"],
        voice: true,
        accepts: &[],
        cnmi_reported_mode: None,
    },
    Profile {
        id: "ec25",
        name: "Quectel EC25 / EG25-G",
        source: "Quectel EC25&EC21_AT_Commands_Manual_V1.3 (2018-09-20): §8 AT+CNMI (test \
                 answer (0-2),(0-3),(0,2),(0-2),(0,1); <ds>=2 stores reports in \"SR\"), \
                 §8 AT+CPMS, §2 ATI/AT+CGMM/AT+CGMR; boot URCs RDY, +CFUN: 1, +CPIN: READY, \
                 +QIND: SMS DONE, +QIND: PB DONE",
        manufacturer: "Quectel",
        model: "EC25",
        revision: "EC25EFAR06A06M4G",
        ati: &["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"],
        cnmi_test: "+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)",
        cnmi_power_on: [2, 1, 0, 0, 0],
        cnmi_error: 303,
        cpms_test: "+CPMS: (\"SM\",\"ME\",\"MT\",\"SR\"),(\"SM\",\"ME\",\"MT\"),(\"SM\",\"ME\",\"MT\")",
        report_storage: "SR",
        boot_urcs: &[
            "RDY",
            "+CFUN: 1",
            "+CPIN: READY",
            "+QUSIM: 1",
            "+QIND: SMS DONE",
            "+QIND: PB DONE",
        ],
        voice: true,
        accepts: &[],
        cnmi_reported_mode: None,
    },
    Profile {
        id: "e3372",
        name: "Huawei E3372 (stick mode)",
        source: "HUAWEI ME909s Series LTE Module AT Command Interface Specification \
                 (V100R001_03, 2019-03-13), same firmware family: +CNMI (test answer \
                 (0-2),(0-3),(0,2),(0-2),(0,1), power-on 0,0,0,0,0), +CPMS, ^CURC, ^SYSSTART; \
                 no voice",
        manufacturer: "huawei",
        model: "E3372",
        revision: "22.315.01.00.00",
        ati: &[
            "Manufacturer: huawei",
            "Model: E3372",
            "Revision: 22.315.01.00.00",
            "+GCAP: +CGSM,+DS,+ES",
        ],
        cnmi_test: "+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)",
        cnmi_power_on: [0, 0, 0, 0, 0],
        cnmi_error: 303,
        cpms_test: "+CPMS: (\"SM\",\"ME\"),(\"SM\",\"ME\"),(\"SM\",\"ME\")",
        report_storage: "SM",
        boot_urcs: &["^SYSSTART", "+CPIN: READY"],
        voice: false,
        accepts: &["^CURC"],
        cnmi_reported_mode: None,
    },
    Profile {
        id: "e173",
        name: "Huawei E173",
        source: "HUAWEI UMTS Datacard/Modem AT Command Interface Specification V2.3 \
                 (2007-02-10): +CNMI (power-on 0,0,0,0,0), +CPMS, ^CURC; voice on \
                 firmware with ^CVOICE",
        manufacturer: "huawei",
        model: "E173",
        revision: "11.126.85.00.209",
        ati: &[
            "Manufacturer: huawei",
            "Model: E173",
            "Revision: 11.126.85.00.209",
            "+GCAP: +CGSM,+DS,+ES",
        ],
        cnmi_test: "+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)",
        cnmi_power_on: [0, 0, 0, 0, 0],
        cnmi_error: 303,
        cpms_test: "+CPMS: (\"SM\",\"ME\"),(\"SM\",\"ME\"),(\"SM\",\"ME\")",
        report_storage: "SM",
        boot_urcs: &["^SYSSTART", "+CPIN: READY"],
        voice: true,
        accepts: &["^CURC"],
        cnmi_reported_mode: None,
    },
];

/// The profile called `id` (case-insensitive).
pub fn by_id(id: &str) -> Option<&'static Profile> {
    PROFILES.iter().find(|p| p.id.eq_ignore_ascii_case(id))
}

/// The ids of every profile, for help texts.
pub fn ids() -> Vec<&'static str> {
    PROFILES.iter().map(|p| p.id).collect()
}

/// Lines a module sends on its own when it has just started or restarted: seeing one means
/// the settings the driver made are gone.
pub fn is_boot_urc(line: &str) -> bool {
    let upper = line.trim().to_ascii_uppercase();
    matches!(
        upper.as_str(),
        "RDY"
            | "CALL READY"
            | "SMS READY"
            | "+CFUN: 1"
            | "+CPIN: READY"
            | "^SYSSTART"
            | "PB DONE"
            | "SMS DONE"
            | "+QIND: SMS DONE"
            | "+QIND: PB DONE"
            | "+QUSIM: 1"
            | "*ATREADY: 1"
    )
}

// ---- +CNMI ----

/// A set of small numbers (0..=31), as a `=?` answer lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ValueSet(u32);

impl ValueSet {
    /// Every value from 0 to `max`.
    pub const fn up_to(max: u8) -> Self {
        ValueSet((1u32 << (max + 1)) - 1)
    }

    pub fn contains(self, v: u8) -> bool {
        v < 32 && self.0 & (1 << v) != 0
    }

    fn insert(&mut self, v: u8) {
        if v < 32 {
            self.0 |= 1 << v;
        }
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses `(0-3)`, `(0,2)`, `(0,1,2)`, `0-2` or `(0,2-3)`.
    pub fn parse(text: &str) -> Option<Self> {
        let inner = text.trim().trim_start_matches('(').trim_end_matches(')');
        let mut set = ValueSet::default();
        for item in inner.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi): (u8, u8) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
                    if lo > hi || hi > 31 {
                        return None;
                    }
                    for v in lo..=hi {
                        set.insert(v);
                    }
                }
                None => set.insert(item.parse().ok().filter(|v| *v < 32)?),
            }
        }
        (!set.is_empty()).then_some(set)
    }
}

/// The values `AT+CNMI=?` says a modem takes, per parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CnmiSupport {
    pub mode: ValueSet,
    pub mt: ValueSet,
    pub bm: ValueSet,
    pub ds: ValueSet,
    pub bfr: ValueSet,
}

impl CnmiSupport {
    /// Everything 3GPP TS 27.005 defines: what is assumed of a modem that does not answer
    /// `AT+CNMI=?`.
    pub const ANY: CnmiSupport = CnmiSupport {
        mode: ValueSet::up_to(3),
        mt: ValueSet::up_to(3),
        bm: ValueSet::up_to(3),
        ds: ValueSet::up_to(2),
        bfr: ValueSet::up_to(1),
    };

    pub fn allows(&self, c: Cnmi) -> bool {
        let [mode, mt, bm, ds, bfr] = c.0;
        self.mode.contains(mode)
            && self.mt.contains(mt)
            && self.bm.contains(bm)
            && self.ds.contains(ds)
            && self.bfr.contains(bfr)
    }
}

/// Splits `(a,b),(c-d),e` at the commas between groups, not inside parentheses.
fn split_groups(text: &str) -> Vec<&str> {
    let mut groups = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                groups.push(text.get(start..i).unwrap_or(""));
                start = i + 1;
            }
            _ => {}
        }
    }
    groups.push(text.get(start..).unwrap_or(""));
    groups
}

/// Parses the answer to `AT+CNMI=?` (`+CNMI: (0-3),(0-3),(0,2),(0,1),(0,1)`). A list that
/// stops early (some modems omit `<bfr>`) leaves the missing parameters at 0 only.
pub fn parse_cnmi_test(line: &str) -> Option<CnmiSupport> {
    let rest = line.trim().strip_prefix("+CNMI:")?;
    let groups = split_groups(rest.trim());
    let zero = ValueSet::up_to(0);
    let get = |i: usize| match groups.get(i) {
        Some(g) => ValueSet::parse(g),
        None => Some(zero),
    };
    Some(CnmiSupport {
        mode: get(0)?,
        mt: get(1)?,
        bm: get(2)?,
        ds: get(3)?,
        bfr: get(4)?,
    })
}

/// One `AT+CNMI` setting: `<mode>,<mt>,<bm>,<ds>,<bfr>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cnmi(pub [u8; 5]);

impl Cnmi {
    /// Parses `2,1,0,2,0` (also the answer of `AT+CNMI?` after its `+CNMI:`); missing
    /// trailing values are 0.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = text.strip_prefix("+CNMI:").unwrap_or(text);
        let mut values = [0u8; 5];
        let mut count = 0;
        for (i, item) in text.split(',').enumerate() {
            let slot = values.get_mut(i)?;
            *slot = item.trim().parse().ok()?;
            count += 1;
        }
        (count >= 1).then_some(Cnmi(values))
    }

    pub fn mode(self) -> u8 {
        self.0[0]
    }

    pub fn mt(self) -> u8 {
        self.0[1]
    }

    pub fn ds(self) -> u8 {
        self.0[3]
    }

    /// Whether new SMS are announced at all (else only the periodic sweep finds them).
    pub fn indicates_new_sms(self) -> bool {
        self.mt() != 0 && self.mode() != 0
    }

    /// What this setting means, for the log.
    pub fn describe(self) -> String {
        let sms = match self.mt() {
            0 => "new SMS not announced (found only by the periodic sweep)",
            1 => "new SMS stored and announced with +CMTI",
            2 => "new SMS delivered directly with +CMT",
            _ => "class 3 SMS delivered with +CMT, others announced with +CMTI",
        };
        let reports = match self.ds() {
            0 => "delivery reports not routed",
            1 => "delivery reports delivered directly with +CDS",
            _ => "delivery reports stored and announced with +CDSI",
        };
        let mode = match self.mode() {
            0 => "; indications buffered in the modem (mode 0)",
            _ => "",
        };
        format!("{sms}; {reports}{mode}")
    }
}

impl fmt::Display for Cnmi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e] = self.0;
        write!(f, "{a},{b},{c},{d},{e}")
    }
}

/// The settings to try, best first, among those `support` allows.
///
/// Preferences, each falling back to the next:
/// - `<mode>` 2 (buffer while the link is busy, then flush), 1, 3; 0 (indications stay in
///   the modem) only when nothing else is allowed;
/// - `<mt>` 1 (stored and announced: the SIM keeps the message until the store has it),
///   2 (delivered directly), 3;
/// - `<ds>` 2 (stored, `+CDSI`), 1 (direct, `+CDS`), 0;
/// - `<bm>` 0, `<bfr>` 0 (flush what was buffered), else the lowest allowed.
///
/// The order steps down `<ds>` first, then `<mt>`, then `<mode>`: losing delivery reports
/// costs less than losing immediate SMS. A modem that rejects a value its `=?` listed is
/// thus walked down step by step.
pub fn cnmi_candidates(support: &CnmiSupport) -> Vec<Cnmi> {
    let lowest = |set: ValueSet| (0..32u8).find(|v| set.contains(*v)).unwrap_or(0);
    let bm = if support.bm.contains(0) {
        0
    } else {
        lowest(support.bm)
    };
    let bfr = if support.bfr.contains(0) {
        0
    } else {
        lowest(support.bfr)
    };
    let modes: Vec<u8> = [2, 1, 3]
        .into_iter()
        .filter(|m| support.mode.contains(*m))
        .collect();
    let modes = if modes.is_empty() { vec![0] } else { modes };
    let mut out = Vec::new();
    for &mode in &modes {
        for mt in [1, 2, 3, 0] {
            for ds in [2, 1, 0] {
                let c = Cnmi([mode, mt, bm, ds, bfr]);
                if support.allows(c) && !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    out
}

// ---- +CPMS ----

/// The storages `AT+CPMS=?` lists for `<mem1>` (read, list, delete), `<mem2>` (write, send)
/// and `<mem3>` (receive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpmsSupport {
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub receive: Vec<String>,
}

/// Parses `+CPMS: ("SM","ME","MT"),("SM","ME"),("SM","ME")`. A modem that lists one group
/// only (some do) offers it for all three.
pub fn parse_cpms_test(line: &str) -> Option<CpmsSupport> {
    let rest = line.trim().strip_prefix("+CPMS:")?.trim();
    // Some modems wrap the three lists in one more pair of parentheses.
    let rest = match rest.strip_prefix("((").and_then(|r| r.strip_suffix("))")) {
        Some(inner) => format!("({inner})"),
        None => rest.to_owned(),
    };
    let groups: Vec<Vec<String>> = split_groups(&rest)
        .into_iter()
        .map(|g| {
            g.split(',')
                .map(|s| {
                    s.trim_matches(|c: char| c == '"' || c == '(' || c == ')' || c.is_whitespace())
                        .to_ascii_uppercase()
                })
                .filter(|s| !s.is_empty())
                .collect()
        })
        .collect();
    let first = groups.first().filter(|g| !g.is_empty())?.clone();
    let group = |i: usize| {
        groups
            .get(i)
            .filter(|g| !g.is_empty())
            .cloned()
            .unwrap_or_else(|| first.clone())
    };
    Some(CpmsSupport {
        read: group(0),
        write: group(1),
        receive: group(2),
    })
}

/// The storages the driver uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageChoice {
    /// `<mem1>`: where messages are read, listed and deleted; also `<mem2>`, `<mem3>` when
    /// the modem allows.
    pub messages: String,
    /// Where stored delivery reports are (`SR` on modems that keep them apart).
    pub reports: String,
}

impl StorageChoice {
    /// The `AT+CPMS=` command that selects this storage for reading, writing and receiving.
    pub fn command(&self, support: Option<&CpmsSupport>) -> String {
        let m = &self.messages;
        match support {
            Some(s) if !s.write.contains(m) || !s.receive.contains(m) => {
                format!("AT+CPMS=\"{m}\"")
            }
            _ => format!("AT+CPMS=\"{m}\",\"{m}\",\"{m}\""),
        }
    }
}

/// Chooses the message storage: `wanted` (from `modem.storage`) if the modem lists it for
/// reading and receiving, else `SM` (the SIM, which every modem has and which survives a
/// modem swap), else `ME`, else `MT`, else the first one listed. Reports are looked for in
/// `report_hint` (`SR`) when the modem lists it for reading, else with the messages.
pub fn choose_storage(
    support: &CpmsSupport,
    wanted: Option<&str>,
    report_hint: Option<&str>,
) -> Option<StorageChoice> {
    let usable =
        |m: &str| support.read.iter().any(|r| r == m) && support.receive.iter().any(|r| r == m);
    let wanted = wanted.map(str::to_ascii_uppercase);
    let messages = wanted
        .iter()
        .map(String::as_str)
        .chain(["SM", "ME", "MT"])
        .find(|m| usable(m))
        .map(str::to_owned)
        .or_else(|| support.receive.first().cloned())?;
    let sr_listed = support.read.iter().any(|r| r == "SR");
    let reports = match report_hint {
        Some(hint) if support.read.iter().any(|r| r.eq_ignore_ascii_case(hint)) => {
            hint.to_ascii_uppercase()
        }
        _ if sr_listed => "SR".to_owned(),
        _ => messages.clone(),
    };
    Some(StorageChoice { messages, reports })
}

// ---- quirks ----

/// Something known about a model that the standard commands do not reveal.
#[derive(Debug)]
pub struct Quirk {
    /// Upper-case substrings of `AT+CGMM` / `ATI` that identify the model.
    pub models: &'static [&'static str],
    /// What is special, for the log.
    pub note: &'static str,
    /// Commands sent after the built-in init sequence (failures are logged, not fatal).
    pub extra_init: &'static [&'static str],
}

/// Known quirks, from the manuals and from what ModemManager's plugins and gammu's AT driver
/// work around.
pub static QUIRKS: &[Quirk] = &[
    Quirk {
        models: &["SIM800", "SIM900", "SIM808"],
        note: "+CNMI <ds> is 0 or 1 only, so delivery reports come as +CDS; SMS commands fail \
               until \"SMS Ready\" after a boot; +CIEV: \"SMSFULL\" when the SIM is full",
        extra_init: &[],
    },
    Quirk {
        models: &["SIM7600", "SIM7500", "A7670", "SIM7670", "A7608"],
        note: "power-on +CNMI may announce nothing; SMS commands work only after \"SMS DONE\"",
        extra_init: &[],
    },
    Quirk {
        models: &["EC25", "EG25", "EC21", "EC20", "BG96"],
        note: "stored delivery reports go to the \"SR\" storage; URCs go to the USB AT port \
               unless AT+QURCCFG=\"urcport\" routes them to the port gsmgw uses",
        extra_init: &[],
    },
    Quirk {
        models: &["E3372", "E173", "E1750", "E3531", "E353", "HUAWEI"],
        note: "periodic ^RSSI/^MODE/^BOOT status lines are switched off with AT^CURC=0; a \
               final result can arrive glued to the next line",
        extra_init: &["AT^CURC=0"],
    },
];

/// The quirks whose model names appear in `identity` (the `AT+CGMM` and `ATI` answers).
pub fn quirks_for(identity: &str) -> Vec<&'static Quirk> {
    let upper = identity.to_ascii_uppercase();
    QUIRKS
        .iter()
        .filter(|q| q.models.iter().any(|m| upper.contains(m)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(values: &[u8]) -> ValueSet {
        let mut s = ValueSet::default();
        for v in values {
            s.insert(*v);
        }
        s
    }

    #[test]
    fn the_sim800_manual_answer_allows_ds_0_or_1_only() {
        // SIM800 Series AT Command Manual V1.09 §4.2.8.
        let s = parse_cnmi_test("+CNMI: (0-3),(0-3),(0,2),(0,1),(0,1)").expect("parses");
        assert_eq!(s.mode, set(&[0, 1, 2, 3]));
        assert_eq!(s.bm, set(&[0, 2]));
        assert_eq!(s.ds, set(&[0, 1]));
        assert_eq!(cnmi_candidates(&s).first(), Some(&Cnmi([2, 1, 0, 1, 0])));
    }

    #[test]
    fn the_quectel_answer_gives_stored_reports() {
        // Quectel EC25&EC21 AT Commands Manual V1.3, also gammu's test vector.
        let s = parse_cnmi_test("+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)").expect("parses");
        assert_eq!(cnmi_candidates(&s).first(), Some(&Cnmi([2, 1, 0, 2, 0])));
    }

    #[test]
    fn a_modem_without_mode_2_or_ds_gets_the_next_best() {
        // Motorola G20 AT Commands Reference: +CNMI: (0,3),(0-2),(0,2),(0),(0).
        let s = parse_cnmi_test("+CNMI: (0,3),(0-2),(0,2),(0),(0)").expect("parses");
        let c = cnmi_candidates(&s);
        assert_eq!(c.first(), Some(&Cnmi([3, 1, 0, 0, 0])));
        assert!(c.iter().all(|c| c.mode() == 3), "{c:?}");
    }

    #[test]
    fn a_modem_with_only_bfr_1_and_lists_without_parentheses_is_understood() {
        // ModemManager's test vector for the Cinterion PHS8: (0,1,2),(0,1),(0,2),(0),(1).
        let s = parse_cnmi_test("+CNMI: (0,1,2),(0,1),(0,2),(0),(1)").expect("parses");
        assert_eq!(cnmi_candidates(&s).first(), Some(&Cnmi([2, 1, 0, 0, 1])));
        let s = parse_cnmi_test("+CNMI: 0-2,0-3,0,0-1,0").expect("parses");
        assert_eq!(cnmi_candidates(&s).first(), Some(&Cnmi([2, 1, 0, 1, 0])));
    }

    #[test]
    fn fallbacks_step_down_reports_before_new_sms_before_mode() {
        let c = cnmi_candidates(&CnmiSupport::ANY);
        let shown: Vec<String> = c.iter().take(7).map(Cnmi::to_string).collect();
        assert_eq!(
            shown,
            [
                "2,1,0,2,0",
                "2,1,0,1,0",
                "2,1,0,0,0",
                "2,2,0,2,0",
                "2,2,0,1,0",
                "2,2,0,0,0",
                "2,3,0,2,0"
            ]
        );
        // Settings that announce nothing come last within a mode.
        let first_silent = c.iter().position(|c| c.mt() == 0).expect("listed");
        assert!(c.iter().take(first_silent).all(|c| c.indicates_new_sms()));
    }

    #[test]
    fn a_modem_that_allows_only_mode_0_still_gets_a_candidate() {
        let s = parse_cnmi_test("+CNMI: (0),(0,1),(0),(0),(0)").expect("parses");
        assert_eq!(
            cnmi_candidates(&s),
            [Cnmi([0, 1, 0, 0, 0]), Cnmi([0, 0, 0, 0, 0])]
        );
    }

    #[test]
    fn garbage_cnmi_answers_are_refused_not_guessed() {
        for bad in [
            "",
            "+CNMI:",
            "+CNMI: (a-b)",
            "+CNMI: (3-1),(0)",
            "+CNMI: (0-99)",
            "OK",
        ] {
            assert_eq!(parse_cnmi_test(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cnmi_settings_parse_and_print() {
        assert_eq!(Cnmi::parse("+CNMI: 2,1,0,0,0"), Some(Cnmi([2, 1, 0, 0, 0])));
        assert_eq!(Cnmi::parse("1,2"), Some(Cnmi([1, 2, 0, 0, 0])));
        assert_eq!(Cnmi::parse("1,2,0,0,0,0"), None);
        assert_eq!(Cnmi::parse("x"), None);
        assert_eq!(Cnmi([2, 1, 0, 2, 0]).to_string(), "2,1,0,2,0");
    }

    #[test]
    fn the_sim_storage_is_chosen_and_ec25_reports_are_read_from_sr() {
        // Quectel EC25: reports are filed in "SR", which only <mem1> lists.
        let s = parse_cpms_test(
            "+CPMS: (\"SM\",\"ME\",\"MT\",\"SR\"),(\"SM\",\"ME\",\"MT\"),(\"SM\",\"ME\",\"MT\")",
        )
        .expect("parses");
        let c = choose_storage(&s, None, None).expect("chosen");
        assert_eq!(c.messages, "SM");
        assert_eq!(c.reports, "SR");
        assert_eq!(c.command(Some(&s)), "AT+CPMS=\"SM\",\"SM\",\"SM\"");
    }

    #[test]
    fn a_configured_storage_wins_when_the_modem_has_it() {
        // SIM800 Series AT Command Manual V1.09 §4.2.9.
        let s = parse_cpms_test(
            "+CPMS: (\"SM\",\"ME\",\"SM_P\",\"ME_P\",\"MT\"),(\"SM\",\"ME\",\"SM_P\",\"ME_P\",\"MT\"),(\"SM\",\"ME\",\"SM_P\",\"ME_P\",\"MT\")",
        )
        .expect("parses");
        let c = choose_storage(&s, Some("me"), None).expect("chosen");
        assert_eq!((c.messages.as_str(), c.reports.as_str()), ("ME", "ME"));
        let c = choose_storage(&s, Some("XX"), None).expect("chosen");
        assert_eq!(c.messages, "SM");
    }

    #[test]
    fn a_storage_only_for_reading_is_selected_for_reading_only() {
        // Multi-Tech GPRS AT Commands: (("SM","ME","BM","SR"),("SM","ME"),("SM","ME")).
        let s = parse_cpms_test(
            "+CPMS: ((\"SM\",\"ME\",\"BM\",\"SR\"),(\"SM\",\"ME\"),(\"SM\",\"ME\"))",
        )
        .expect("parses");
        assert_eq!(s.read, ["SM", "ME", "BM", "SR"]);
        assert_eq!(s.write, ["SM", "ME"]);
        let only_read = CpmsSupport {
            read: vec!["BM".into()],
            write: vec!["ME".into()],
            receive: vec!["ME".into()],
        };
        let c = choose_storage(&only_read, None, None).expect("chosen");
        assert_eq!(c.messages, "ME");
        assert_eq!(c.command(Some(&only_read)), "AT+CPMS=\"ME\",\"ME\",\"ME\"");
    }

    #[test]
    fn every_profile_answers_parse_and_its_power_on_value_is_allowed() {
        for p in PROFILES {
            let s = parse_cnmi_test(p.cnmi_test).unwrap_or_else(|| panic!("{}", p.id));
            assert!(s.allows(Cnmi(p.cnmi_power_on)), "{}", p.id);
            assert!(!cnmi_candidates(&s).is_empty(), "{}", p.id);
            let cpms = parse_cpms_test(p.cpms_test).unwrap_or_else(|| panic!("{}", p.id));
            let c = choose_storage(&cpms, None, Some(p.report_storage)).expect("storage");
            assert_eq!(c.reports, p.report_storage, "{}", p.id);
            for urc in p.boot_urcs {
                assert!(is_boot_urc(urc), "{}: {urc}", p.id);
            }
            assert_eq!(by_id(p.id).map(|q| q.id), Some(p.id));
        }
    }

    #[test]
    fn quirks_are_found_by_model_name() {
        let q = quirks_for("E3372\nManufacturer: huawei");
        assert!(q.iter().any(|q| q.extra_init.contains(&"AT^CURC=0")));
        assert!(!quirks_for("SIMCOM_SIM800C").is_empty());
        assert!(quirks_for("gsmgw simulated modem").is_empty());
    }
}
