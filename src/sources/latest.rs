//! The latest version of each key of a change log, in one hash aggregate: per key the change
//! with the greatest ordering, how many identical copies of it arrived (replays), whether a
//! different change ties with it, and whether it is a delete.
//!
//! Plain SQL needs `max` grouped by key and a join back to the changes, which reads and groups
//! the changes twice; `last_value(… ORDER BY …)` keeps every column of every group as a
//! `ScalarValue` and is slower still. Here a group keeps its latest change as Arrow row-format
//! bytes in one arena, so every column type works, and the state spills and merges as any
//! aggregate's does.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, StructArray, UInt32Array, UInt64Array, new_null_array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, UInt64Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{Result, internal_err, not_impl_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

/// The output's fields besides the change's own columns: identical copies of the latest change,
/// whether a different change ties with it on the ordering, whether it is a delete.
pub const COPIES: &str = "__dr_copies";
pub const TIE: &str = "__dr_tie";
pub const DELETED: &str = "__dr_deleted";
/// The aggregate's name in a change log's own session.
pub const NAME: &str = "dualrun_latest";

/// `dualrun_latest(row_hash, is_delete, order_1 … order_k, value_1 … value_n)`: a struct of the
/// values of the change with the greatest (order_1 … order_k), then [`COPIES`], [`TIE`] and
/// [`DELETED`]. Two changes with the same ordering are copies when their row hashes agree.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Latest {
    signature: Signature,
    orders: usize,
    names: Vec<String>,
}

impl Latest {
    pub fn new(orders: usize, names: Vec<String>) -> Latest {
        Latest {
            signature: Signature::variadic_any(Volatility::Immutable),
            orders,
            names,
        }
    }

    fn fields(&self, arg_types: &[DataType]) -> Result<Fields> {
        if arg_types.len() != 2 + self.orders + self.names.len() {
            return internal_err!(
                "dualrun_latest takes {} arguments, not {}",
                2 + self.orders + self.names.len(),
                arg_types.len()
            );
        }
        let values = &arg_types[2 + self.orders..];
        let mut fields: Vec<Field> = self
            .names
            .iter()
            .zip(values)
            .map(|(name, data_type)| Field::new(name, data_type.clone(), true))
            .collect();
        fields.push(Field::new(COPIES, DataType::UInt64, false));
        fields.push(Field::new(TIE, DataType::Boolean, false));
        fields.push(Field::new(DELETED, DataType::Boolean, false));
        Ok(fields.into())
    }
}

impl AggregateUDFImpl for Latest {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(self.fields(arg_types)?))
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        not_impl_err!("{NAME} runs grouped by key only")
    }

    /// The group's latest change: its hash (NULL: none), copies, tie and delete, then its
    /// ordering and value columns as they came in.
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let field = |name: &str, data_type: &DataType| -> FieldRef {
            Arc::new(Field::new(
                format_state_name(args.name, name),
                data_type.clone(),
                true,
            ))
        };
        let mut fields = vec![
            field("hash", &DataType::UInt64),
            field("copies", &DataType::UInt64),
            field("tie", &DataType::Boolean),
            field("deleted", &DataType::Boolean),
        ];
        for (i, input) in args.input_fields.iter().enumerate().skip(2) {
            fields.push(field(&format!("column_{i}"), input.data_type()));
        }
        Ok(fields)
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let types: Vec<DataType> = args
            .expr_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let fields = self.fields(&types)?;
        Ok(Box::new(LatestGroups::new(
            &types[2..2 + self.orders],
            &types[2 + self.orders..],
            fields,
        )?))
    }
}

/// Dead bytes in the arena worth copying the live ones for.
const GARBAGE_WORTH_COLLECTING: usize = 16 << 20;

/// Orderings up to this many row-format bytes are kept in the group itself.
const SHORT_ORDER: usize = 16;

/// An ordering as row-format bytes, compared mostly by its first [`SHORT_ORDER`] bytes as a
/// big-endian number (zero-padded): a number compare, not a memcmp behind a pointer.
#[derive(Clone, Copy, Debug)]
struct Order<'a> {
    prefix: u128,
    len: usize,
    /// All the bytes, when there are more than [`SHORT_ORDER`] (else possibly empty).
    bytes: &'a [u8],
}

impl<'a> Order<'a> {
    fn of(bytes: &'a [u8]) -> Order<'a> {
        let mut prefix = [0u8; SHORT_ORDER];
        let n = bytes.len().min(SHORT_ORDER);
        prefix[..n].copy_from_slice(&bytes[..n]);
        Order {
            prefix: u128::from_be_bytes(prefix),
            len: bytes.len(),
            bytes,
        }
    }

    /// The byte order: equal padded prefixes leave the full bytes to decide between two long
    /// orderings; otherwise the shorter one is a prefix of the other (the rest zeros), so less.
    fn cmp(&self, other: &Order) -> Ordering {
        self.prefix.cmp(&other.prefix).then_with(|| {
            if self.len > SHORT_ORDER && other.len > SHORT_ORDER {
                self.bytes.cmp(other.bytes)
            } else {
                self.len.cmp(&other.len)
            }
        })
    }

    fn is_long(&self) -> bool {
        self.len > SHORT_ORDER
    }
}

/// One group's latest change so far: the ordering's prefix and length in the group, then, at
/// `start` in the arena, a long ordering's bytes and the values as row-format bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Change {
    /// The ordering's prefix, high and low halves (two u64 rather than a u128, whose alignment
    /// would pad the group to 64 bytes).
    prefix: [u64; 2],
    start: usize,
    order_len: u32,
    row_len: u32,
    hash: u64,
    copies: u64,
    tie: bool,
    deleted: bool,
    seen: bool,
    /// The row (plus one; 0: none) of the batch being added that holds the group's latest
    /// change, whose values are then converted and stored once the batch is through. In the
    /// group itself rather than an array beside it: one random access per change, not two.
    pending: u32,
}

// A group stays within 56 bytes: most changes meet a group that is not in the caches.
const _: () = assert!(size_of::<Change>() == 56);

impl Change {
    fn prefix(&self) -> u128 {
        (self.prefix[0] as u128) << 64 | self.prefix[1] as u128
    }

    /// Bytes of the ordering in the arena: all of a long one's, none of a short one's.
    fn order_in_arena(&self) -> usize {
        if self.order_len as usize > SHORT_ORDER {
            self.order_len as usize
        } else {
            0
        }
    }

    fn order<'a>(&self, arena: &'a [u8]) -> Order<'a> {
        Order {
            prefix: self.prefix(),
            len: self.order_len as usize,
            bytes: &arena[self.start..self.start + self.order_in_arena()],
        }
    }

    /// The ordering's row-format bytes.
    fn order_bytes(&self, arena: &[u8]) -> Vec<u8> {
        if self.order_len as usize > SHORT_ORDER {
            self.order(arena).bytes.to_vec()
        } else {
            self.prefix().to_be_bytes()[..self.order_len as usize].to_vec()
        }
    }

    fn row<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        let start = self.start + self.order_in_arena();
        &arena[start..start + self.row_len as usize]
    }

    fn bytes(&self) -> usize {
        self.order_in_arena() + self.row_len as usize
    }

    /// Meets another change of the group: true when the other one is later and takes over
    /// (its bytes then still need storing); copies and ties counted otherwise.
    fn meet(&mut self, order: Ordering, hash: u64, copies: u64, tie: bool) -> bool {
        match order {
            Ordering::Greater => true,
            Ordering::Equal => {
                if hash == self.hash {
                    self.copies += copies;
                } else {
                    self.tie = true;
                }
                self.tie |= tie;
                false
            }
            Ordering::Less => false,
        }
    }
}

#[derive(Debug)]
struct LatestGroups {
    orders: RowConverter,
    values: RowConverter,
    /// The types the ordering and value columns came in as (the row format gives a
    /// dictionary's values back, not the dictionary).
    order_types: Vec<DataType>,
    value_types: Vec<DataType>,
    fields: Fields,
    groups: Vec<Change>,
    arena: Vec<u8>,
    garbage: usize,
    touched: Vec<usize>,
    /// The bytes of a row of NULL values and of a NULL ordering, for a group that met no
    /// change.
    null_row: Vec<u8>,
    null_order: Vec<u8>,
}

impl LatestGroups {
    fn new(
        orders_types: &[DataType],
        values_types: &[DataType],
        fields: Fields,
    ) -> Result<LatestGroups> {
        let (orders, null_order) = Self::converter(orders_types)?;
        let (values, null_row) = Self::converter(values_types)?;
        Ok(LatestGroups {
            orders,
            values,
            order_types: orders_types.to_vec(),
            value_types: values_types.to_vec(),
            fields,
            groups: Vec::new(),
            arena: Vec::new(),
            garbage: 0,
            touched: Vec::new(),
            null_row,
            null_order,
        })
    }

    /// The row format of `types`, and its row of NULLs.
    fn converter(types: &[DataType]) -> Result<(RowConverter, Vec<u8>)> {
        let converter = RowConverter::new(types.iter().cloned().map(SortField::new).collect())?;
        let nulls: Vec<ArrayRef> = types.iter().map(|t| new_null_array(t, 1)).collect();
        let null_row = converter.convert_columns(&nulls)?.row(0).as_ref().to_vec();
        Ok((converter, null_row))
    }

    /// Columns read back from the row format, as the `types` they came in as.
    fn as_they_came(columns: Vec<ArrayRef>, types: &[DataType]) -> Result<Vec<ArrayRef>> {
        columns
            .into_iter()
            .zip(types)
            .map(|(column, data_type)| {
                if column.data_type() == data_type {
                    Ok(column)
                } else {
                    Ok(cast(&column, data_type)?)
                }
            })
            .collect()
    }

    /// Where the value columns start among `columns` (input or state): they come last, one per
    /// output field but the three counts.
    fn values_start(&self, columns: &[ArrayRef]) -> usize {
        columns.len() - (self.fields.len() - 3)
    }

    fn resize(&mut self, groups: usize) {
        self.groups.resize(groups, Change::default());
    }

    /// Stores a group's latest change's ordering and values (its other fields are set
    /// already).
    fn store(&mut self, group: usize, order: Order, row: &[u8]) {
        let needed = row.len() + if order.is_long() { order.len } else { 0 };
        if self.arena.len() + needed > self.arena.capacity() && self.garbage * 4 >= self.arena.len()
        {
            // Growing would double an arena a quarter dead: copy the live bytes instead, so
            // the memory the pool is told of (and the spills it forces) stays near the live size.
            self.arena = Self::live(&mut self.groups, &self.arena);
            self.garbage = 0;
        }
        let change = &mut self.groups[group];
        self.garbage += change.bytes();
        change.prefix = [(order.prefix >> 64) as u64, order.prefix as u64];
        change.start = self.arena.len();
        change.order_len = order.len as u32;
        change.row_len = row.len() as u32;
        if order.is_long() {
            self.arena.extend_from_slice(order.bytes);
        }
        self.arena.extend_from_slice(row);
    }

    /// Copies the live bytes to a new arena when most of the old one is dead.
    fn collect_garbage(&mut self) {
        if self.garbage < GARBAGE_WORTH_COLLECTING || self.garbage * 2 < self.arena.len() {
            return;
        }
        self.arena = Self::live(&mut self.groups, &self.arena);
        self.garbage = 0;
    }

    /// A new arena with the bytes of `groups` only, which are moved to it, and room for a
    /// quarter more.
    fn live(groups: &mut [Change], arena: &[u8]) -> Vec<u8> {
        let bytes: usize = groups.iter().map(Change::bytes).sum();
        let mut live = Vec::with_capacity(bytes + bytes / 4);
        for change in groups.iter_mut().filter(|c| c.seen) {
            let start = live.len();
            live.extend_from_slice(&arena[change.start..change.start + change.bytes()]);
            change.start = start;
        }
        live
    }

    /// Removes the groups `emit_to` asks for, with an arena of their own: the first groups'
    /// bytes are copied out and become garbage here, so that emitting in slices stays linear.
    fn take(&mut self, emit_to: EmitTo) -> (Vec<Change>, Vec<u8>) {
        let mut taken = emit_to.take_needed(&mut self.groups);
        let arena = Self::live(&mut taken, &self.arena);
        self.garbage += arena.len();
        if self.groups.is_empty() {
            self.arena = Vec::new();
            self.garbage = 0;
        }
        self.collect_garbage();
        (taken, arena)
    }
}

/// Changes coming in: input rows (each one change) or partial states (each a group's latest
/// change so far, with its copies and tie); a row without a hash carries no change.
struct Incoming<'a> {
    hashes: &'a UInt64Array,
    copies: Option<&'a UInt64Array>,
    ties: Option<&'a BooleanArray>,
    deletes: &'a BooleanArray,
    orders: &'a [ArrayRef],
    values: &'a [ArrayRef],
}

impl LatestGroups {
    /// The input's columns as changes: the row hash, whether it is a delete, the ordering
    /// columns, the values.
    fn input<'a>(&self, values: &'a [ArrayRef]) -> Incoming<'a> {
        let orders_end = self.values_start(values);
        Incoming {
            hashes: values[0].as_primitive::<UInt64Type>(),
            copies: None,
            ties: None,
            deletes: values[1].as_boolean(),
            orders: &values[2..orders_end],
            values: &values[orders_end..],
        }
    }

    /// Each change meets its group's latest so far; the values of those that become the latest
    /// are converted and stored once per batch.
    fn absorb(
        &mut self,
        incoming: Incoming,
        group_indices: &[usize],
        kept: impl Fn(usize) -> bool,
    ) -> Result<()> {
        let converted = self.orders.convert_columns(incoming.orders)?;
        let orders: Vec<Order> = (0..converted.num_rows())
            .map(|row| Order::of(converted.row(row).data()))
            .collect();
        for (row, &group) in group_indices.iter().enumerate() {
            if !kept(row) || incoming.hashes.is_null(row) {
                continue;
            }
            let hash = incoming.hashes.value(row);
            let copies = incoming.copies.map_or(1, |c| c.value(row));
            let tie = incoming.ties.is_some_and(|t| t.value(row));
            let order = &orders[row];
            let change = &mut self.groups[group];
            let pending = change.pending;
            let later = if pending != 0 {
                order.cmp(&orders[pending as usize - 1])
            } else if change.seen {
                order.cmp(&change.order(&self.arena))
            } else {
                Ordering::Greater
            };
            if change.meet(later, hash, copies, tie) {
                if pending == 0 {
                    self.touched.push(group);
                }
                change.pending = row as u32 + 1;
                change.hash = hash;
                change.copies = copies;
                change.tie = tie;
                change.deleted = incoming.deletes.is_valid(row) && incoming.deletes.value(row);
                change.seen = true;
            }
        }
        let touched = std::mem::take(&mut self.touched);
        let rows: UInt32Array = touched
            .iter()
            .map(|&g| self.groups[g].pending - 1)
            .collect();
        let taken = incoming
            .values
            .iter()
            .map(|column| take(column, &rows, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let values = self.values.convert_columns(&taken)?;
        for (i, &group) in touched.iter().enumerate() {
            let order = orders[self.groups[group].pending as usize - 1];
            self.groups[group].pending = 0;
            self.store(group, order, values.row(i).as_ref());
        }
        self.touched = touched;
        self.touched.clear();
        self.collect_garbage();
        Ok(())
    }
}

impl GroupsAccumulator for LatestGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        let kept = |row: usize| opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
        self.absorb(self.input(values), group_indices, kept)
    }

    /// States in the layout [`GroupsAccumulator::state`] writes: hash, copies, tie, deleted,
    /// then the ordering and value columns as they came in.
    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        let orders_end = self.values_start(values);
        let incoming = Incoming {
            hashes: values[0].as_primitive::<UInt64Type>(),
            copies: Some(values[1].as_primitive::<UInt64Type>()),
            ties: Some(values[2].as_boolean()),
            deletes: values[3].as_boolean(),
            orders: &values[4..orders_end],
            values: &values[orders_end..],
        };
        self.absorb(incoming, group_indices, |_| true)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (taken, arena) = self.take(emit_to);
        let parser = self.values.parser();
        let rows = taken.iter().map(|change| {
            parser.parse(if change.seen {
                change.row(&arena)
            } else {
                &self.null_row
            })
        });
        let mut columns = Self::as_they_came(self.values.convert_rows(rows)?, &self.value_types)?;
        columns.push(Arc::new(UInt64Array::from_iter_values(
            taken.iter().map(|c| c.copies),
        )));
        columns.push(Arc::new(BooleanArray::from_iter(
            taken.iter().map(|c| Some(c.tie)),
        )));
        columns.push(Arc::new(BooleanArray::from_iter(
            taken.iter().map(|c| Some(c.deleted)),
        )));
        Ok(Arc::new(StructArray::try_new(
            self.fields.clone(),
            columns,
            None,
        )?))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (taken, arena) = self.take(emit_to);
        let orders: Vec<Vec<u8>> = taken
            .iter()
            .map(|c| {
                if c.seen {
                    c.order_bytes(&arena)
                } else {
                    self.null_order.clone()
                }
            })
            .collect();
        let parser = self.orders.parser();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from_iter(
                taken.iter().map(|c| c.seen.then_some(c.hash)),
            )),
            Arc::new(UInt64Array::from_iter_values(
                taken.iter().map(|c| c.copies),
            )),
            Arc::new(BooleanArray::from_iter(taken.iter().map(|c| Some(c.tie)))),
            Arc::new(BooleanArray::from_iter(
                taken.iter().map(|c| Some(c.deleted)),
            )),
        ];
        columns.extend(Self::as_they_came(
            self.orders
                .convert_rows(orders.iter().map(|o| parser.parse(o)))?,
            &self.order_types,
        )?);
        let parser = self.values.parser();
        columns.extend(Self::as_they_came(
            self.values.convert_rows(taken.iter().map(|c| {
                parser.parse(if c.seen {
                    c.row(&arena)
                } else {
                    &self.null_row
                })
            }))?,
            &self.value_types,
        )?);
        Ok(columns)
    }

    /// Each change as a state of its own: the input's columns as they are, a filtered row
    /// without a hash.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let count = values[0].len();
        let hashes: ArrayRef = match opt_filter {
            None => values[0].clone(),
            Some(filter) => {
                let hashes = values[0].as_primitive::<UInt64Type>();
                Arc::new(UInt64Array::from_iter((0..count).map(|row| {
                    (filter.is_valid(row) && filter.value(row)).then(|| hashes.value(row))
                })))
            }
        };
        let mut columns: Vec<ArrayRef> = vec![
            hashes,
            Arc::new(UInt64Array::from(vec![1u64; count])),
            Arc::new(BooleanArray::from(vec![false; count])),
            values[1].clone(),
        ];
        columns.extend(values[2..].iter().cloned());
        Ok(columns)
    }

    fn size(&self) -> usize {
        self.groups.capacity() * size_of::<Change>()
            + self.arena.capacity()
            + self.orders.size()
            + self.values.size()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{Int64Array, StringArray};

    use super::*;

    /// One change: key, ordering (a number and a long text), value, delete.
    type Row = (usize, i64, String, i64, bool);

    fn changes() -> Vec<Row> {
        let mut state = 0x5eed_1234_abcd_0001u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut rows: Vec<Row> = (0..6_000)
            .map(|_| {
                let order = next(40) as i64;
                (
                    next(50) as usize,
                    order,
                    format!("2026-11-25T00:00:{:02}+offset-{}", order % 7, next(3)),
                    next(4) as i64,
                    next(10) == 0,
                )
            })
            .collect();
        // Replays: identical copies of some changes.
        let replays: Vec<Row> = rows.iter().step_by(37).cloned().collect();
        rows.extend(replays);
        rows
    }

    fn hash(row: &Row) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (row.1, &row.2, row.3, row.4).hash(&mut hasher);
        hasher.finish()
    }

    /// Per key, what the aggregate must say: (tie, copies, value, deleted) of the latest.
    fn expected(rows: &[Row], long: bool) -> BTreeMap<usize, (bool, u64, i64, bool)> {
        let order = |r: &Row| {
            if long {
                (r.2.clone(), r.1)
            } else {
                (String::new(), r.1)
            }
        };
        let mut latest: BTreeMap<usize, Vec<&Row>> = BTreeMap::new();
        for row in rows {
            let at = latest.entry(row.0).or_default();
            match at.first().map(|first| order(row).cmp(&order(first))) {
                None | Some(Ordering::Equal) => at.push(row),
                Some(Ordering::Greater) => *at = vec![row],
                Some(Ordering::Less) => {}
            }
        }
        latest
            .into_iter()
            .map(|(key, at)| {
                let tie = at.iter().any(|r| hash(r) != hash(at[0]));
                (key, (tie, at.len() as u64, at[0].3, at[0].4))
            })
            .collect()
    }

    /// The aggregate's input columns for `rows` (orders: the number, or the text then the
    /// number).
    fn input(rows: &[Row], long: bool) -> (Vec<ArrayRef>, Vec<usize>) {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(hash))),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.4)))),
        ];
        if long {
            columns.push(Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.2.clone()),
            )));
        }
        columns.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.1),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.3),
        )));
        (columns, rows.iter().map(|r| r.0).collect())
    }

    fn accumulator(long: bool) -> LatestGroups {
        let orders = if long {
            vec![DataType::Utf8, DataType::Int64]
        } else {
            vec![DataType::Int64]
        };
        let latest = Latest::new(orders.len(), vec!["value".to_string()]);
        let mut types = vec![DataType::UInt64, DataType::Boolean];
        types.extend(orders.iter().cloned());
        types.push(DataType::Int64);
        LatestGroups::new(&orders, &[DataType::Int64], latest.fields(&types).unwrap()).unwrap()
    }

    fn outcome(arrays: &[ArrayRef]) -> BTreeMap<usize, (bool, u64, i64, bool)> {
        let mut seen = BTreeMap::new();
        let mut key = 0;
        for array in arrays {
            let s = array.as_struct();
            let value = s
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let copies = s.column(1).as_primitive::<UInt64Type>();
            let (tie, deleted) = (s.column(2).as_boolean(), s.column(3).as_boolean());
            for row in 0..s.len() {
                seen.insert(
                    key,
                    (
                        tie.value(row),
                        copies.value(row),
                        value.value(row),
                        deleted.value(row),
                    ),
                );
                key += 1;
            }
        }
        seen
    }

    /// The same changes through every path DataFusion may take: rows added directly, rows
    /// passed through as states, partial states emitted in slices and merged.
    #[test]
    fn every_path_finds_the_latest_change_copies_and_ties() {
        for long in [false, true] {
            let rows = changes();
            let want = expected(&rows, long);
            assert!(want.values().any(|w| w.0) && want.values().any(|w| !w.0 && w.1 > 1));
            let keep_ties = |got: BTreeMap<usize, (bool, u64, i64, bool)>| {
                // A tied key's values are either change's: only the tie is checked.
                got.into_iter()
                    .map(|(k, v)| (k, if v.0 { (true, 0, 0, false) } else { v }))
                    .collect::<BTreeMap<_, _>>()
            };
            let want = keep_ties(want);

            let mut direct = accumulator(long);
            let mut passed = accumulator(long);
            let mut last = accumulator(long);
            let mut partial = accumulator(long);
            for (i, batch) in rows.chunks(700).enumerate() {
                let (columns, groups) = input(batch, long);
                direct.update_batch(&columns, &groups, None, 50).unwrap();
                let states = passed.convert_to_state(&columns, None).unwrap();
                passed.merge_batch(&states, &groups, 50).unwrap();
                partial.update_batch(&columns, &groups, None, 50).unwrap();
                if i % 3 == 2 {
                    let first = partial.state(EmitTo::First(20)).unwrap();
                    let rest = partial.state(EmitTo::All).unwrap();
                    let identity: Vec<usize> = (0..50).collect();
                    last.merge_batch(&first, &identity[..20], 50).unwrap();
                    last.merge_batch(&rest, &identity[20..], 50).unwrap();
                }
            }
            let states = partial.state(EmitTo::All).unwrap();
            let groups: Vec<usize> = (0..states[0].len()).collect();
            last.merge_batch(&states, &groups, 50).unwrap();
            for (path, mut accumulator) in
                [("direct", direct), ("passed", passed), ("merged", last)]
            {
                let first = accumulator.evaluate(EmitTo::First(13)).unwrap();
                let rest = accumulator.evaluate(EmitTo::All).unwrap();
                assert_eq!(
                    keep_ties(outcome(&[first, rest])),
                    want,
                    "{path}, long {long}"
                );
            }
        }
    }

    /// A partial state that already holds a tie keeps it when merged into a group whose latest
    /// change is one of the tied ones.
    #[test]
    fn a_tie_inside_a_partial_state_survives_the_merge() {
        let change = |value| (0, 100, String::new(), value, false);
        let mut last = accumulator(false);
        for rows in [vec![change(1)], vec![change(1), change(2)]] {
            let mut partial = accumulator(false);
            let (columns, groups) = input(&rows, false);
            partial.update_batch(&columns, &groups, None, 1).unwrap();
            let states = partial.state(EmitTo::All).unwrap();
            last.merge_batch(&states, &[0], 1).unwrap();
        }
        let got = outcome(&[last.evaluate(EmitTo::All).unwrap()]);
        assert!(got[&0].0, "the tie is lost: {got:?}");
    }
}
