//! How the crate's one-slice entries are declared: each is written once (its signature, its
//! docs, the one call it makes on an instruction set) and becomes both the free function, on the
//! fastest instruction set, and its [`Backend`](crate::Backend) twin, on that backend (or
//! [`Error::BackendUnavailable`](crate::Error::BackendUnavailable), nothing written).

/// `pub fn name<..>(args) -> Result<T, Error> = |isa| call; impl Backend { docs }` defines
/// `name` (with `isa` the best instruction set) and `Backend::name` (with `isa` the backend's).
macro_rules! entries {
    ($(
        $(#[$attr:meta])*
        pub fn $name:ident<$($gen:ident: Element),*>($($arg:ident: $ty:ty),* $(,)?)
            -> Result<$ok:ty, Error> = |$isa:ident| $body:expr;
        impl Backend { $(#[$backend_attr:meta])* }
    )*) => {
        $(
            $(#[$attr])*
            pub fn $name<$($gen: Element),*>($($arg: $ty),*) -> Result<$ok, Error> {
                let $isa = Isa::best();
                $body
            }
        )*

        impl Backend {
            $(
                $(#[$backend_attr])*
                pub fn $name<$($gen: Element),*>(self, $($arg: $ty),*) -> Result<$ok, Error> {
                    let $isa = self.isa()?;
                    $body
                }
            )*
        }
    };
}
