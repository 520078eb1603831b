//! `#[cairn::workflow]`: checks a workflow's signature where it is written, so a mistake
//! gets one short answer that says what to write instead of a trait error at
//! `Registry::register`.

use proc_macro::TokenStream;
use syn::visit::Visit;
use syn::{FnArg, ItemFn, Pat, PatType, Stmt, Type};

/// Marks an `async fn(ctx: Context, input: T) -> Result<O, Error>` as a workflow and
/// checks its shape: that it is `async`, that it takes a context and one input, and that
/// the input owns its data (it is stored as JSON and read back on every replay, so
/// `&str` cannot be, and `String` is what to take). A well-formed function is left as
/// written.
#[proc_macro_attribute]
pub fn workflow(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut function = syn::parse_macro_input!(item as ItemFn);
    let mut problems: Vec<syn::Error> = Vec::new();
    if !proc_macro2::TokenStream::from(args).is_empty() {
        problems.push(syn::Error::new(
            function.sig.ident.span(),
            "`#[cairn::workflow]` takes no arguments",
        ));
    }
    if function.sig.asyncness.is_none() {
        problems.push(syn::Error::new(
            function.sig.fn_token.span,
            "a workflow is an `async fn`: write `async fn`",
        ));
    }
    let arity = function.sig.inputs.len();
    match function.sig.inputs.iter_mut().nth(1) {
        Some(FnArg::Typed(input)) if arity == 2 => {
            if let Some(message) = borrowed(&input.ty) {
                problems.push(syn::Error::new_spanned(&input.ty, message));
                // Taken owned, and borrowed again at the top of the body, the function
                // compiles as written: the answer above is the only one.
                if let Some(rebind) = own(input) {
                    function.block.stmts.insert(0, rebind);
                }
            }
        }
        _ => problems.push(syn::Error::new_spanned(
            &function.sig.inputs,
            "a workflow takes a context and one input: `(ctx: Context, input: T)`; bundle \
             several values in a struct that derives `Serialize` and `Deserialize`",
        )),
    }
    let errors = problems
        .into_iter()
        .map(|problem| problem.to_compile_error());
    quote::quote! {
        #(#errors)*
        #function
    }
    .into()
}

/// What to write instead, when input type `ty` borrows: a reference, or a lifetime
/// other than `'static`.
fn borrowed(ty: &Type) -> Option<String> {
    struct Find(Option<String>);
    impl<'ast> Visit<'ast> for Find {
        fn visit_type_reference(&mut self, reference: &'ast syn::TypeReference) {
            if self.0.is_none() {
                let owned = match &*reference.elem {
                    Type::Path(path) if path.path.is_ident("str") => "`String`",
                    Type::Slice(_) => "a `Vec`",
                    _ => "an owned value",
                };
                self.0 = Some(format!(
                    "a workflow input cannot borrow: it is stored as JSON and read back on \
                     every replay, so take {owned} instead"
                ));
            }
        }

        fn visit_lifetime(&mut self, lifetime: &'ast syn::Lifetime) {
            if self.0.is_none() && lifetime.ident != "static" {
                self.0 = Some(
                    "a workflow input cannot borrow: it is stored as JSON and read back on \
                     every replay, so take an owned type (`String`, not `Cow<'_, str>`)"
                        .to_owned(),
                );
            }
        }
    }
    let mut find = Find(None);
    find.visit_type(ty);
    find.0
}

/// For an input `name: &T` (`T` holding no lifetime): takes `T`'s owned form instead and
/// returns the statement that borrows it back as `name: &T`.
fn own(input: &mut PatType) -> Option<Stmt> {
    let Pat::Ident(pattern) = &*input.pat else {
        return None;
    };
    let Type::Reference(reference) = &*input.ty else {
        return None;
    };
    let elem = &reference.elem;
    if borrowed(elem).is_some() {
        return None;
    }
    let name = &pattern.ident;
    let rebind = syn::parse_quote! {
        let #name: &#elem = ::std::borrow::Borrow::borrow(&#name);
    };
    *input.ty = syn::parse_quote!(<#elem as ::std::borrow::ToOwned>::Owned);
    Some(rebind)
}
