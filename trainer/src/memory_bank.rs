//! The memory bank of paper Sec. 3.2.5: the negatives (projector embedding + label or
//! pseudo-label, detached) of the last few iterations (3 in the paper) are added to the
//! current iteration's negatives of L_cont (Eq. 6). Bounded: each iteration contributes
//! at most `per_iteration` samples from E_cut and as many from E_t (4000 + 4000 by
//! default). The bank is saved in checkpoints (docs/design.md#cutmix-and-l_cont) so that
//! a resumed run continues exactly.

use std::collections::VecDeque;
use tch::{Kind, Tensor};

/// One iteration's entry.
#[derive(Debug)]
pub struct BankEntry {
    /// `n x K` unit embeddings (f32, detached).
    pub embeddings: Tensor,
    /// `n` labels (i64; 255 = ignore).
    pub labels: Tensor,
}

/// A FIFO of the last `capacity` iterations' negatives.
#[derive(Debug)]
pub struct MemoryBank {
    capacity: usize,
    entries: VecDeque<BankEntry>,
}

impl MemoryBank {
    /// An empty bank holding `capacity` iterations.
    pub fn new(capacity: usize) -> MemoryBank {
        MemoryBank {
            capacity,
            entries: VecDeque::new(),
        }
    }

    /// Adds an iteration's negatives, dropping the oldest beyond capacity.
    pub fn push(&mut self, embeddings: &Tensor, labels: &Tensor) {
        if self.capacity == 0 {
            return;
        }
        self.entries.push_back(BankEntry {
            embeddings: embeddings.detach().to_kind(Kind::Float),
            labels: labels.detach().to_kind(Kind::Int64),
        });
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
    }

    /// Number of stored samples.
    pub fn len(&self) -> i64 {
        self.entries.iter().map(|e| e.labels.size()[0]).sum()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All stored samples, oldest first: (`M x K`, `M`), or None when empty.
    pub fn all(&self) -> Option<(Tensor, Tensor)> {
        if self.is_empty() {
            return None;
        }
        let e: Vec<&Tensor> = self.entries.iter().map(|e| &e.embeddings).collect();
        let l: Vec<&Tensor> = self.entries.iter().map(|e| &e.labels).collect();
        Some((Tensor::cat(&e, 0), Tensor::cat(&l, 0)))
    }

    /// The entries, oldest first (for checkpoints).
    pub fn entries(&self) -> impl Iterator<Item = &BankEntry> {
        self.entries.iter()
    }

    /// Replaces the content (restoring a checkpoint), oldest first.
    pub(crate) fn restore(&mut self, entries: Vec<BankEntry>) {
        self.entries = entries.into();
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_iterations_in_order() {
        let mut bank = MemoryBank::new(3);
        assert!(bank.all().is_none());
        for i in 0..5i64 {
            let e = Tensor::full([2, 4], i as f64, (Kind::Float, tch::Device::Cpu));
            let l = Tensor::from_slice(&[i, i]);
            bank.push(&e, &l);
        }
        let (e, l) = bank.all().unwrap();
        assert_eq!(e.size(), vec![6, 4]);
        assert_eq!(Vec::<i64>::try_from(&l).unwrap(), vec![2, 2, 3, 3, 4, 4]);
    }
}
