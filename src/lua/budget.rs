//! Credit protection at the host (DESIGN.md "Security", issue 11.6): what scripts may send
//! while handling an SMS from a sender nobody enrolled, and which USSD codes an SMS may
//! trigger. The outbox (store) applies the caps and recipient rules to every SMS; this adds
//! the budgets that need to know which SMS caused a reply.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::bus::Command;

/// The window of [`SmsPolicy::stranger_per_hour`].
const HOUR: Duration = Duration::from_secs(3600);

/// The numbers of the host's credit protection, from `[sms]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsPolicy {
    /// Parts the scripts may send while handling one SMS from a sender nobody enrolled.
    pub reply_budget: u32,
    /// Parts sent because of SMS from one such sender, per hour.
    pub stranger_per_hour: u32,
    /// USSD codes a script may send while handling an SMS.
    pub ussd_allow: Vec<String>,
}

impl Default for SmsPolicy {
    fn default() -> Self {
        SmsPolicy::from(&crate::config::SmsConfig::default())
    }
}

impl From<&crate::config::SmsConfig> for SmsPolicy {
    fn from(c: &crate::config::SmsConfig) -> Self {
        Self {
            reply_budget: c.reply_budget,
            stranger_per_hour: c.stranger_replies_per_hour,
            ussd_allow: c.ussd_allow.clone(),
        }
    }
}

impl SmsPolicy {
    /// True when a script handling an SMS may send USSD `code`.
    pub fn ussd_allowed(&self, code: &str) -> bool {
        self.ussd_allow.iter().any(|c| c == code)
    }
}

/// Parts sent per stranger in the last hour.
#[derive(Debug, Default)]
pub(crate) struct StrangerBudgets {
    sent: BTreeMap<String, VecDeque<(Instant, u32)>>,
}

impl StrangerBudgets {
    /// Keeps, of `commands` emitted while handling one SMS from `sender` (nobody enrolled
    /// it), the SMS that fit the per-SMS budget and the sender's hourly budget, in order;
    /// priority SMS always pass (the outbox's reserve holds them). Returns how many were
    /// dropped.
    pub fn apply(
        &mut self,
        policy: &SmsPolicy,
        sender: &str,
        commands: &mut Vec<Command>,
        now: Instant,
    ) -> usize {
        let recent = self.sent.entry(sender.to_string()).or_default();
        while recent
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= HOUR)
        {
            recent.pop_front();
        }
        let mut hour: u32 = recent.iter().map(|(_, p)| *p).sum();
        let mut this_sms: u32 = 0;
        let mut dropped = 0;
        commands.retain(|cmd| {
            let Command::SendSms {
                text,
                priority: false,
                ..
            } = cmd
            else {
                return true;
            };
            let parts = u32::try_from(crate::modem::pdu::part_count(text)).unwrap_or(u32::MAX);
            let fits = this_sms.saturating_add(parts) <= policy.reply_budget
                && hour.saturating_add(parts) <= policy.stranger_per_hour;
            if fits {
                this_sms += parts;
                hour += parts;
            } else {
                dropped += 1;
            }
            fits
        });
        if this_sms > 0 {
            recent.push_back((now, this_sms));
        }
        if recent.is_empty() {
            self.sent.remove(sender);
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sms(text: &str, priority: bool) -> Command {
        Command::SendSms {
            to: "+447700900123".into(),
            text: text.into(),
            request_id: None,
            priority,
        }
    }

    #[test]
    fn one_sms_gets_at_most_the_budget_and_priority_always_passes() {
        let policy = SmsPolicy {
            reply_budget: 3,
            stranger_per_hour: 100,
            ussd_allow: vec![],
        };
        let mut budgets = StrangerBudgets::default();
        let mut commands: Vec<Command> = (0..10).map(|i| sms(&format!("r{i}"), false)).collect();
        commands.push(sms("alarm", true));
        let t0 = Instant::now();
        assert_eq!(budgets.apply(&policy, "X", &mut commands, t0), 7);
        assert_eq!(commands.len(), 4);
        assert!(matches!(
            &commands[3],
            Command::SendSms { priority: true, .. }
        ));
    }

    #[test]
    fn a_long_reply_counts_its_parts() {
        let policy = SmsPolicy {
            reply_budget: 3,
            stranger_per_hour: 100,
            ussd_allow: vec![],
        };
        let mut budgets = StrangerBudgets::default();
        // 4 parts of GSM 7-bit: over a budget of 3 on its own.
        let mut commands = vec![sms(&"x".repeat(153 * 4), false), sms("short", false)];
        budgets.apply(&policy, "X", &mut commands, Instant::now());
        assert_eq!(commands, vec![sms("short", false)]);
    }

    #[test]
    fn the_hourly_budget_spans_messages_and_frees_up_after_an_hour() {
        let policy = SmsPolicy {
            reply_budget: 3,
            stranger_per_hour: 4,
            ussd_allow: vec![],
        };
        let mut budgets = StrangerBudgets::default();
        let t0 = Instant::now();
        let mut kept = 0;
        for i in 0..5 {
            let mut commands = vec![sms("a", false), sms("b", false)];
            budgets.apply(&policy, "X", &mut commands, t0 + Duration::from_secs(i));
            kept += commands.len();
        }
        assert_eq!(kept, 4);
        let mut other = vec![sms("a", false)];
        budgets.apply(&policy, "Y", &mut other, t0);
        assert_eq!(other.len(), 1, "budgets are per sender");
        let mut later = vec![sms("a", false), sms("b", false)];
        budgets.apply(&policy, "X", &mut later, t0 + HOUR + Duration::from_secs(5));
        assert_eq!(later.len(), 2);
    }
}
