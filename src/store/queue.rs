//! The sequenced outbound queue of one connector: contiguous sequence numbers from 1,
//! acknowledgement, and the byte and packet limits.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{QueueLimits, QueuedPacket, SharedQuote};

#[derive(Debug, Default)]
pub struct Queue {
    packets: VecDeque<QueuedPacket>,
    /// Sum of the lengths of `packets`, for `max_queue_bytes`.
    bytes: usize,
    /// Sequence number of the last packet pushed (0 before the first).
    last_seq: u64,
    /// Highest sequence number removed (delivered without ack, or acknowledged).
    acked: u64,
}

impl Queue {
    /// Queues a packet unless that would exceed `limits`; returns its sequence number.
    /// `quoted`: the packet's shared quote when the same push reaches other queues too.
    pub fn push(&mut self, text: Arc<str>, quoted: Option<SharedQuote>, limits: QueueLimits) -> Option<u64> {
        if self.packets.len() >= limits.max_packets || self.bytes + text.len() > limits.max_bytes {
            return None;
        }
        Some(self.push_packet(text, quoted))
    }

    /// Queues a packet for this queue alone whatever the limits (the close command must
    /// always fit).
    pub fn push_unbounded(&mut self, text: Arc<str>) -> u64 {
        self.push_packet(text, None)
    }

    fn push_packet(&mut self, text: Arc<str>, quoted: Option<SharedQuote>) -> u64 {
        self.last_seq += 1;
        self.bytes += text.len();
        self.packets.push_back(QueuedPacket { seq: self.last_seq, text, quoted });
        self.last_seq
    }

    /// Removes and returns every packet (a plain `sync`). The buffer goes with them: an
    /// idle connector keeps no capacity, and the packets are not copied.
    pub fn take_all(&mut self) -> Vec<QueuedPacket> {
        self.bytes = 0;
        self.acked = self.last_seq;
        std::mem::take(&mut self.packets).into()
    }

    /// Removes packets up to `seq`. `Err(last_seq)` if `seq` was never issued.
    pub fn ack(&mut self, seq: u64) -> Result<(), u64> {
        if seq > self.last_seq {
            return Err(self.last_seq);
        }
        while self.packets.front().is_some_and(|p| p.seq <= seq) {
            if let Some(p) = self.packets.pop_front() {
                self.bytes -= p.text.len();
            }
        }
        self.acked = self.acked.max(seq);
        Ok(())
    }

    /// Copies of the packets not yet acknowledged.
    pub fn pending(&self) -> Vec<QueuedPacket> {
        self.packets.iter().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: QueueLimits = QueueLimits { max_packets: 100, max_bytes: 1000 };

    fn texts(packets: &[QueuedPacket]) -> Vec<(u64, &str)> {
        packets.iter().map(|p| (p.seq, &*p.text)).collect()
    }

    #[test]
    fn sequence_numbers_are_contiguous_from_one() {
        let mut q = Queue::default();
        assert_eq!(q.push("a".into(), None, ROOMY), Some(1));
        assert_eq!(q.push("b".into(), None, ROOMY), Some(2));
        assert_eq!(texts(&q.take_all()), vec![(1, "a"), (2, "b")]);
        assert_eq!(q.push("c".into(), None, ROOMY), Some(3));
        assert_eq!(q.acked(), 2);
    }

    #[test]
    fn ack_removes_up_to_n_and_keeps_the_rest() {
        let mut q = Queue::default();
        for t in ["a", "b", "c"] {
            q.push(t.into(), None, ROOMY);
        }
        q.ack(0).unwrap();
        assert_eq!(q.pending().len(), 3);
        q.ack(2).unwrap();
        assert_eq!(texts(&q.pending()), vec![(3, "c")]);
        q.ack(1).unwrap(); // a stale ack changes nothing
        assert_eq!((q.len(), q.acked()), (1, 2));
        assert_eq!(q.ack(4), Err(3));
    }

    #[test]
    fn limits_refuse_without_queuing_and_close_always_fits() {
        let mut q = Queue::default();
        let tight = QueueLimits { max_packets: 2, max_bytes: 5 };
        assert_eq!(q.push("abc".into(), None, tight), Some(1));
        assert_eq!(q.push("abc".into(), None, tight), None, "bytes");
        assert_eq!(q.push("ab".into(), None, tight), Some(2));
        assert_eq!(q.push("a".into(), None, tight), None, "packets");
        assert_eq!(q.push_unbounded("close".into()), 3);
        q.ack(3).unwrap();
        assert_eq!(q.push("abcde".into(), None, tight), Some(4), "bytes are released by ack");
    }
}
