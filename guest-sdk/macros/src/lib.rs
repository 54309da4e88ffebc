//! The `#[handler]` attribute of `clawcage-sdk`. Use it through
//! `clawcage_sdk::handler`.

use proc_macro::TokenStream;
use quote::quote_spanned;
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, PathArguments, ReturnType, Type, parse_macro_input};

/// Marks the agent's event handler.
///
/// ```ignore
/// #[clawcage_sdk::handler]
/// fn handle(event: clawcage_sdk::Event) -> clawcage_sdk::Result<String> {
///     Ok(format!("got {}", event.kind))
/// }
/// ```
///
/// The function must be a plain (not `async`, not generic) `fn` taking one
/// `Event` and returning `Result<R, E>`, where `R` is a
/// `clawcage_sdk::HandlerOutput` (`String`, `&str`, `()`,
/// `serde_json::Value`, `Json<T>`) and `E` implements `Display`.
///
/// It expands to the function itself, unchanged, plus a hidden type that
/// implements the world's `handler` export by calling it, and the
/// `export!` of that type. Use it once per agent. The export exists only
/// for wasm targets, so the crate also builds (and its tests run) natively.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = proc_macro2::TokenStream::from(args);
    let function = parse_macro_input!(item as ItemFn);
    match expand(args, function) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

fn expand(
    args: proc_macro2::TokenStream,
    function: ItemFn,
) -> syn::Result<proc_macro2::TokenStream> {
    if !args.is_empty() {
        return Err(syn::Error::new_spanned(
            args,
            "#[handler] takes no arguments",
        ));
    }
    let sig = &function.sig;
    if let Some(asyncness) = &sig.asyncness {
        return Err(syn::Error::new_spanned(
            asyncness,
            "the handler must be a plain `fn`: agents run one event at a time, so it cannot be `async`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "the handler cannot be generic",
        ));
    }
    if sig.inputs.len() != 1 {
        return Err(syn::Error::new(
            if sig.inputs.is_empty() {
                sig.paren_token.span.join()
            } else {
                sig.inputs.span()
            },
            "the handler takes exactly one argument: the event (`clawcage_sdk::Event`)",
        ));
    }
    if let Some(FnArg::Receiver(receiver)) = sig.inputs.first() {
        return Err(syn::Error::new_spanned(
            receiver,
            "the handler is a free function, not a method: take `event: clawcage_sdk::Event`",
        ));
    }
    let output = match &sig.output {
        ReturnType::Default => {
            return Err(syn::Error::new_spanned(
                sig,
                "the handler must return a `Result`, for example `clawcage_sdk::Result<String>`",
            ));
        }
        ReturnType::Type(_, output) => output,
    };
    // `Result<R, E>` under any path (`clawcage_sdk::Result<R>`, an alias
    // named `Result`): anything else is told at the user's return type,
    // not deep in the SDK.
    let result = match &**output {
        Type::Path(path) => path.path.segments.last().filter(|s| s.ident == "Result"),
        _ => None,
    };
    let Some(result) = result else {
        return Err(syn::Error::new_spanned(
            output,
            format!(
                "the handler must return a `Result`, not `{}`: write `-> clawcage_sdk::Result<{}>` and return `Ok(…)`",
                quote::quote!(#output).to_string().replace(' ', ""),
                quote::quote!(#output).to_string().replace(' ', "")
            ),
        ));
    };
    // The success type must be a `HandlerOutput`: checked at the user's
    // type, so the error names it there.
    let check_output = match &result.arguments {
        PathArguments::AngleBracketed(arguments) => match arguments.args.first() {
            Some(GenericArgument::Type(success)) => {
                let span = success.span();
                quote_spanned! {span=>
                    const _: fn() = || {
                        ::clawcage_sdk::__private::assert_handler_output::<#success>();
                    };
                }
            }
            _ => quote::quote!(),
        },
        _ => quote::quote!(),
    };
    let name = &sig.ident;
    let span = name.span();
    Ok(quote_spanned! {span=>
        // Off wasm (`cargo test` of the agent's logic on the build machine)
        // there is no host to call it: no export, and no unused warning.
        #[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
        #function

        #check_output

        #[cfg(target_family = "wasm")]
        const _: () = {
            struct __ClawcageAgent;

            impl ::clawcage_sdk::wit::exports::clawcage::agent::handler::Guest for __ClawcageAgent {
                fn handle(
                    event: ::clawcage_sdk::wit::clawcage::agent::types::Event,
                ) -> ::core::result::Result<::std::string::String, ::std::string::String> {
                    ::clawcage_sdk::__private::run_handler(event, #name)
                }
            }

            ::clawcage_sdk::wit::export_agent!(__ClawcageAgent with_types_in ::clawcage_sdk::wit);
        };
    })
}
