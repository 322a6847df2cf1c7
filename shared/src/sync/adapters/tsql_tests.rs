//! The generated T-SQL, exactly: no SQL Server runs on the machines that build Switchyard.

use super::*;

fn cols() -> (Vec<String>, Vec<String>) {
    let n = ["Id", "Line", "Name", "Qty", "ModifiedAt", "RV", "Deleted"];
    let t = [
        "int",
        "nvarchar",
        "nvarchar",
        "decimal",
        "datetime2",
        "timestamp",
        "bit",
    ];
    (
        n.iter().map(|s| s.to_string()).collect(),
        t.iter().map(|s| s.to_string()).collect(),
    )
}

#[test]
fn names_are_bracketed_and_escaped() {
    assert_eq!(quote("Name"), "[Name]");
    assert_eq!(quote("a]b"), "[a]]b]");
    assert_eq!(table(Some("dbo"), "Equipment"), "[dbo].[Equipment]");
}

#[test]
fn keyset_reads_below_a_watermark() {
    let (n, t) = cols();
    let c = Columns {
        names: &n,
        types: &t,
    };
    let tbl = table(Some("dbo"), "Equipment");
    assert_eq!(
        keyset(
            &tbl,
            &c,
            &["Id"],
            Some("ModifiedAt"),
            true,
            &From::Since { minus_seconds: 300 },
            true,
            None
        ),
        "SELECT [Id], [Line], [Name], [Qty], [ModifiedAt], CAST([RV] AS bigint) AS [RV], [Deleted] \
         FROM [dbo].[Equipment] WHERE [ModifiedAt] >= DATEADD(second, -@P2, CONVERT(datetime2, @P1, 127)) \
         AND [ModifiedAt] < CONVERT(datetime2, @P3, 127) ORDER BY [ModifiedAt], [Id]"
    );
    let after = From::After {
        order: vec!["ModifiedAt", "Id", "Line"],
    };
    assert_eq!(
        keyset(
            &tbl,
            &c,
            &["Id", "Line"],
            Some("ModifiedAt"),
            true,
            &after,
            true,
            Some(500)
        ),
        "SELECT TOP (500) [Id], [Line], [Name], [Qty], [ModifiedAt], CAST([RV] AS bigint) AS [RV], [Deleted] \
         FROM [dbo].[Equipment] WHERE ([ModifiedAt] > CONVERT(datetime2, @P1, 127) OR \
         ([ModifiedAt] = CONVERT(datetime2, @P1, 127) AND ([Id] > @P2 OR ([Id] = @P2 AND [Line] > @P3)))) \
         AND [ModifiedAt] < CONVERT(datetime2, @P4, 127) ORDER BY [ModifiedAt], [Id], [Line]"
    );
    // A full read in key order.
    assert_eq!(
        keyset("[T]", &c, &["Id"], None, true, &From::Start, false, None),
        "SELECT [Id], [Line], [Name], [Qty], [ModifiedAt], CAST([RV] AS bigint) AS [RV], [Deleted] FROM [T] ORDER BY [Id]"
    );
}

#[test]
fn times_are_compared_in_the_columns_own_type() {
    // A watermark (`SYSDATETIME()`, style 126) has seven decimals: `datetime` and
    // `smalldatetime` take it through `datetime2`.
    assert_eq!(
        param_for(1, "datetime"),
        "CONVERT(datetime, CONVERT(datetime2, @P1, 127))"
    );
    assert_eq!(
        param_for(2, "smalldatetime"),
        "CONVERT(smalldatetime, CONVERT(datetime2, @P2, 127))"
    );
    assert_eq!(param_for(1, "datetime2"), "CONVERT(datetime2, @P1, 127)");
    assert_eq!(
        param_for(1, "datetimeoffset"),
        "CONVERT(datetimeoffset, @P1, 127)"
    );
}

#[test]
fn rowversion_reads_stop_below_the_lowest_active_version() {
    let (n, t) = cols();
    let c = Columns {
        names: &n,
        types: &t,
    };
    assert_eq!(
        watermark(Watermark::Rowversion, "RV", "timestamp", "[T]"),
        "SELECT CONVERT(varchar(20), CAST(MIN_ACTIVE_ROWVERSION() AS bigint))"
    );
    assert_eq!(
        keyset(
            "[T]",
            &c,
            &["Id"],
            Some("RV"),
            true,
            &From::Since { minus_seconds: 0 },
            true,
            None
        ),
        "SELECT [Id], [Line], [Name], [Qty], [ModifiedAt], CAST([RV] AS bigint) AS [RV], [Deleted] FROM [T] \
         WHERE [RV] >= CONVERT(binary(8), CAST(@P1 AS bigint)) AND [RV] < CONVERT(binary(8), CAST(@P2 AS bigint)) \
         ORDER BY [RV], [Id]"
    );
    assert_eq!(
        watermark(Watermark::Time, "ModifiedAt", "datetime2", "[T]"),
        "SELECT CONVERT(varchar(40), DATEADD(second, -@P1, SYSDATETIME()), 126)"
    );
    assert_eq!(
        watermark(Watermark::Time, "ModifiedAt", "datetimeoffset", "[T]"),
        "SELECT CONVERT(varchar(40), DATEADD(second, -@P1, SYSDATETIMEOFFSET()), 127)"
    );
    assert_eq!(
        watermark(Watermark::Max, "Id", "int", "[T]"),
        "SELECT CONVERT(varchar(40), MAX([Id])) FROM [T]"
    );
}

#[test]
fn change_tracking_reads_carry_operations_and_deletes() {
    let (n, t) = cols();
    let c = Columns {
        names: &n,
        types: &t,
    };
    assert_eq!(
        watermark(Watermark::ChangeTracking, "", "", "[T]"),
        "SELECT CONVERT(varchar(20), CHANGE_TRACKING_CURRENT_VERSION())"
    );
    assert_eq!(
        changes("[dbo].[T]", &c, &["Id"], false, None),
        "SELECT ct.SYS_CHANGE_VERSION AS [__ct_version], ct.SYS_CHANGE_OPERATION AS [__ct_operation], \
         ct.[Id], t.[Line], t.[Name], t.[Qty], t.[ModifiedAt], CAST(t.[RV] AS bigint) AS [RV], t.[Deleted] \
         FROM CHANGETABLE(CHANGES [dbo].[T], CAST(@P1 AS bigint)) AS ct LEFT JOIN [dbo].[T] AS t ON t.[Id] = ct.[Id] \
         WHERE ct.SYS_CHANGE_VERSION <= CAST(@P2 AS bigint) ORDER BY ct.SYS_CHANGE_VERSION, ct.[Id]"
    );
    assert!(
        changes("[T]", &c, &["Id"], true, None).contains(
            "AND (ct.SYS_CHANGE_VERSION > CAST(@P3 AS bigint) OR (ct.SYS_CHANGE_VERSION = CAST(@P3 AS bigint) AND ct.[Id] > @P4))"
        )
    );
    assert_eq!(
        CT_MIN_VALID,
        "SELECT CONVERT(varchar(20), CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(@P1)))"
    );
}

#[test]
fn writes_are_conditional_and_return_the_row() {
    let (n, t) = cols();
    let c = Columns {
        names: &n,
        types: &t,
    };
    let all = "INSERTED.[Id], INSERTED.[Line], INSERTED.[Name], INSERTED.[Qty], INSERTED.[ModifiedAt], \
               CAST(INSERTED.[RV] AS bigint) AS [RV], INSERTED.[Deleted]";
    assert_eq!(
        update(
            "[T]",
            &c,
            &["Name", "Qty"],
            &[("Deleted", "0")],
            &["Id"],
            Some("RV")
        ),
        format!(
            "UPDATE [T] SET [Name] = @P1, [Qty] = @P2, [Deleted] = 0 OUTPUT {all} \
             WHERE [Id] = @P3 AND [RV] = CONVERT(binary(8), CAST(@P4 AS bigint))"
        )
    );
    assert_eq!(
        update(
            "[T]",
            &c,
            &["ModifiedAt"],
            &[],
            &["Id", "Line"],
            Some("ModifiedAt")
        ),
        format!(
            "UPDATE [T] SET [ModifiedAt] = CONVERT(datetime2, @P1, 127) OUTPUT {all} \
             WHERE [Id] = @P2 AND [Line] = @P3 AND [ModifiedAt] = CONVERT(datetime2, @P4, 127)"
        )
    );
    assert_eq!(
        insert("[T]", &c, &["Id", "Name"], &["Id"], &[("Deleted", "0")]),
        format!(
            "INSERT INTO [T] ([Id], [Name], [Deleted]) OUTPUT {all} SELECT @P1, @P2, 0 \
             WHERE NOT EXISTS (SELECT 1 FROM [T] WITH (UPDLOCK, HOLDLOCK) WHERE [Id] = @P3)"
        )
    );
    assert_eq!(
        delete("[T]", &c, &["Id"], Some("RV")),
        "DELETE FROM [T] OUTPUT DELETED.[Id] WHERE [Id] = @P1 AND [RV] = CONVERT(binary(8), CAST(@P2 AS bigint))"
    );
    assert_eq!(
        fetch("[T]", &c, &["Id", "Line"], 2),
        "SELECT [Id], [Line], [Name], [Qty], [ModifiedAt], CAST([RV] AS bigint) AS [RV], [Deleted] FROM [T] \
         WHERE ([Id] = @P1 AND [Line] = @P2) OR ([Id] = @P3 AND [Line] = @P4)"
    );
}
