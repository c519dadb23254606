//! Where a [`Lion`](crate::Lion) keeps its momentum: owned buffers, or slices the caller owns.

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

#[cfg(feature = "alloc")]
use crate::Buffer;
use crate::{MomentumMut, MomentumRef, SliceMut};

/// Where a [`Lion`](crate::Lion) keeps the momentum of its tensors: `Vec<Buffer>` when it owns
/// them, or caller-provided slices (`[SliceMut; N]`, `&mut [SliceMut]`) without allocation.
///
/// ```
/// use lion_optim::{MomentumStore, SliceMut};
///
/// let (mut a, mut b) = ([0.0f32; 3], [lion_optim::bf16::ZERO; 5]);
/// let mut store = [SliceMut::from(&mut a[..]), SliceMut::from(&mut b[..])];
/// assert_eq!(store.count(), 2);
/// assert_eq!(store.momentum(1).map(|m| m.len()), Some(5));
/// assert_eq!(store.momentum_all_mut().count(), 2);
/// ```
pub trait MomentumStore {
    /// The number of tensors.
    fn count(&self) -> usize;
    /// The momentum of tensor `index`, for reading.
    fn momentum(&self, index: usize) -> Option<MomentumRef<'_>>;
    /// The momentum of tensor `index`, for updating.
    fn momentum_mut(&mut self, index: usize) -> Option<MomentumMut<'_>>;
    /// Every tensor's momentum at once, in order, for updating (the parallel step updates
    /// several tensors at a time).
    fn momentum_all_mut(&mut self) -> impl Iterator<Item = MomentumMut<'_>>;
}

/// Caller-provided slices, in an array or a slice: the store's methods over `[SliceMut]`.
macro_rules! slices_store {
    ($($store:tt)*) => {
        impl $($store)* {
            fn count(&self) -> usize {
                self.len()
            }
            fn momentum(&self, index: usize) -> Option<MomentumRef<'_>> {
                self.get(index).map(|m| m.as_ref().into())
            }
            fn momentum_mut(&mut self, index: usize) -> Option<MomentumMut<'_>> {
                self.get_mut(index).map(|m| m.reborrow().into())
            }
            fn momentum_all_mut(&mut self) -> impl Iterator<Item = MomentumMut<'_>> {
                self.iter_mut().map(|m| m.reborrow().into())
            }
        }
    };
}
slices_store!(<const N: usize> MomentumStore for [SliceMut<'_>; N]);
slices_store!(MomentumStore for &mut [SliceMut<'_>]);
slices_store!(<const N: usize> MomentumStore for [MomentumMut<'_>; N]);
slices_store!(MomentumStore for &mut [MomentumMut<'_>]);

#[cfg(feature = "alloc")]
impl MomentumStore for Vec<Buffer> {
    fn count(&self) -> usize {
        self.len()
    }
    fn momentum(&self, index: usize) -> Option<MomentumRef<'_>> {
        self.get(index).map(Buffer::as_slice)
    }
    fn momentum_mut(&mut self, index: usize) -> Option<MomentumMut<'_>> {
        self.get_mut(index).map(Buffer::as_mut_slice)
    }
    fn momentum_all_mut(&mut self) -> impl Iterator<Item = MomentumMut<'_>> {
        self.iter_mut().map(Buffer::as_mut_slice)
    }
}
