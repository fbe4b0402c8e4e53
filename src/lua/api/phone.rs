//! `gw.phone`: normalise and compare numbers.

use super::*;

/// `gw.phone`: normalise and compare numbers.
pub(crate) fn register(lua: &Lua, ctx: &ApiContext) -> mlua::Result<()> {
    let m = module(lua, "phone")?;
    let c = ctx.clone();
    m.set(
        "normalise",
        lua.create_function(move |_, n: String| {
            let cc = c.shared().country_code.clone();
            Ok(crate::phone::normalise(&n, cc.as_deref()))
        })?,
    )?;
    let c = ctx.clone();
    m.set(
        "same",
        lua.create_function(move |_, (a, b): (Option<String>, Option<String>)| {
            let cc = c.shared().country_code.clone();
            Ok(match (a, b) {
                (Some(a), Some(b))
                    if !c.is_alphanumeric_sender(&a) && !c.is_alphanumeric_sender(&b) =>
                {
                    crate::phone::same(&a, &b, cc.as_deref(), None)
                }
                _ => false,
            })
        })?,
    )?;
    m.set(
        "withheld",
        lua.create_function(|_, n: Option<String>| Ok(is_withheld(n.as_deref())))?,
    )?;
    let c = ctx.clone();
    m.set(
        "in_list",
        lua.create_function(
            move |_, (n, list, digits): (Option<String>, Option<Vec<String>>, Option<usize>)| {
                let cc = c.shared().country_code.clone();
                let Some(n) = n.filter(|n| !is_withheld(Some(n)) && !c.is_alphanumeric_sender(n))
                else {
                    return Ok(false);
                };
                Ok(list
                    .unwrap_or_default()
                    .iter()
                    .any(|entry| crate::phone::same(&n, entry, cc.as_deref(), digits)))
            },
        )?,
    )?;
    let c = ctx.clone();
    m.set(
        "same_last_digits",
        lua.create_function(
            move |_, (a, b, n): (Option<String>, Option<String>, usize)| {
                Ok(match (a, b) {
                    (Some(a), Some(b))
                        if !c.is_alphanumeric_sender(&a) && !c.is_alphanumeric_sender(&b) =>
                    {
                        crate::phone::same(&a, &b, None, Some(n))
                    }
                    _ => false,
                })
            },
        )?,
    )?;
    Ok(())
}
